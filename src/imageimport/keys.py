"""Object keys. Content-addressed, so the same picture is stored once however often,
and never derived from a file name a stranger chose."""

from __future__ import annotations


def image_key(sha256: str, extension: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.{extension}"


def thumbnail_key(sha256: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.thumb.webp"
