"""Dropbox shared folder links: which links we accept, the folder each one names, and the
same link on the configured web endpoint."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.base import MAX_LINK_ID_CHARS, FolderRef

CANONICAL_BASE = "https://www.dropbox.com"
# Hosts that serve shared links; dl.dropbox.com is the direct-download form of the same link.
_LINK_HOSTS = frozenset({"dropbox.com", "www.dropbox.com", "dl.dropbox.com"})
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_HOW_TO_COPY = "In Dropbox, use Share → Copy link on the folder and paste the whole link."


def parse_dropbox_url(url: str) -> FolderRef | None:
    """The shared folder a pasted Dropbox link points at; None if not a Dropbox link.

    Raises InvalidSourceURL for Dropbox links that are not shared folder links, with a
    sentence saying what the link is instead.
    """
    text = url.strip()
    try:
        parts = urlsplit(text if "://" in text else "https://" + text)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    if host.endswith(".dropboxusercontent.com"):
        raise InvalidSourceURL(
            "This is a direct download address of a single Dropbox file, not a shared "
            f"folder link. {_HOW_TO_COPY}"
        )
    if host not in _LINK_HOSTS and not host.endswith(".dropbox.com"):
        return None
    segments = [s for s in parts.path.split("/") if s]
    query = parse_qs(parts.query)
    if segments[:2] == ["scl", "fo"]:
        return _shared_folder(segments[2:], query)
    if segments[:1] == ["sh"]:
        return _legacy_folder(segments[1:])
    if segments[:2] == ["scl", "fi"] or segments[:1] == ["s"]:
        raise InvalidSourceURL(
            "This Dropbox link points to a single file, not a folder. "
            f"Share the folder that holds the images instead. {_HOW_TO_COPY}"
        )
    raise InvalidSourceURL(
        "This is a Dropbox page, not a shared folder link "
        f"(those look like https://www.dropbox.com/scl/fo/...). {_HOW_TO_COPY}"
    )


def _folder_and_key(rest: list[str]) -> tuple[str, str]:
    """The two path parts after /scl/fo/ or /sh/ that name a shared folder."""
    if len(rest) < 2:
        raise InvalidSourceURL(
            f"This Dropbox folder link is incomplete: part of it is missing. {_HOW_TO_COPY}"
        )
    if len(rest) > 2:
        raise InvalidSourceURL(
            "This Dropbox link points inside a shared folder, not at the folder itself. "
            f"{_HOW_TO_COPY}"
        )
    return rest[0], rest[1]


def _shared_folder(rest: list[str], query: dict[str, list[str]]) -> FolderRef:
    folder_id, key = _folder_and_key(rest)
    rlkey = (query.get("rlkey") or [""])[0]
    if not rlkey:
        raise InvalidSourceURL(
            "This Dropbox folder link is incomplete: the rlkey=... part is missing. "
            "Copy the whole link, including everything after the question mark."
        )
    _check_tokens(folder_id, key, rlkey)
    return FolderRef(
        provider="dropbox",
        folder_id=folder_id,
        url=f"{CANONICAL_BASE}/scl/fo/{folder_id}/{key}?rlkey={rlkey}",
        resource_key=rlkey,
    )


def _legacy_folder(rest: list[str]) -> FolderRef:
    folder_id, key = _folder_and_key(rest)
    _check_tokens(folder_id, key)
    return FolderRef(
        provider="dropbox", folder_id=folder_id, url=f"{CANONICAL_BASE}/sh/{folder_id}/{key}"
    )


def _check_tokens(*tokens: str) -> None:
    longest = max(len(token) for token in tokens)
    if longest > MAX_LINK_ID_CHARS:
        raise InvalidSourceURL(
            f"This Dropbox folder link has a part of {longest:,} characters; real links' parts "
            f"are far shorter (this accepts up to {MAX_LINK_ID_CHARS}). {_HOW_TO_COPY}"
        )
    # Only the characters Dropbox uses, so the canonical URL we rebuild cannot smuggle anything.
    if not all(_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidSourceURL(
            "This does not look like a Dropbox shared folder link: it contains characters "
            f"Dropbox links never have. {_HOW_TO_COPY}"
        )


def with_web_base(canonical_url: str, settings: Settings) -> str:
    """The canonical link on the configured web endpoint (the real one unless testing)."""
    parts = urlsplit(canonical_url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return settings.dropbox_web_url + rest
