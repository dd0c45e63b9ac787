"""What an image's thumbnail URL answers while there is no thumbnail to show: a picture,
never an error, so a page's <img> never breaks. Not cached: the real thumbnail replaces it."""

from __future__ import annotations

from typing import Literal

from fastapi import Response

PLACEHOLDER_CONTENT_TYPE = "image/svg+xml"

_FRAME = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400" '
    'role="img" aria-label="{label}"><rect width="400" height="400" fill="{fill}"/>'
    '<g fill="none" stroke="{ink}" stroke-width="10" stroke-linejoin="round">{mark}</g></svg>'
)
# A picture frame: the thumbnail is on its way.
_PENDING = _FRAME.format(
    label="Thumbnail not made yet",
    fill="#e5e7eb",
    ink="#9ca3af",
    mark='<rect x="110" y="130" width="180" height="140" rx="16"/>'
    '<path d="M120 255l55-50 35 30 35-40 45 50"/>',
).encode()
# A crossed-out frame: the image's pixels are damaged.
_CORRUPT = _FRAME.format(
    label="Corrupt image",
    fill="#fee2e2",
    ink="#b91c1c",
    mark='<rect x="110" y="130" width="180" height="140" rx="16"/><path d="M120 140l160 120"/>',
).encode()

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def placeholder(state: Literal["unverified", "corrupt"]) -> Response:
    body = _CORRUPT if state == "corrupt" else _PENDING
    return Response(
        body,
        media_type=PLACEHOLDER_CONTENT_TYPE,
        headers={**_HEADERS, "X-Image-State": state},
    )
