"""What Dropbox's two routes (`api`, `zip`) share: what its error answers mean."""

from __future__ import annotations

from imageimport.errors import SourceUnavailable, TransientError
from imageimport.settings import Settings
from imageimport.sources.budget import RequestBudget, SlotBook
from imageimport.sources.http import TRANSIENT_STATUS, parse_retry_after

CREDENTIALS_REJECTED = (
    "Dropbox rejected the configured app credentials (DROPBOX_APP_KEY, DROPBOX_APP_SECRET, "
    "DROPBOX_REFRESH_TOKEN). Check them, or unset all three to use the public ZIP download."
)
_MISSING_SCOPE = (
    "The Dropbox app lacks a permission it needs (files.metadata.read, files.content.read "
    "and sharing.read); enable them in the app console."
)
_NOT_PUBLIC_STATUS = frozenset({401, 403, 404, 410})


def dropbox_budget(settings: Settings, slots: SlotBook, app_key: str | None) -> RequestBudget:
    """The budget of requests to Dropbox made as this app (None: without app credentials)."""
    return RequestBudget.of(
        slots,
        "dropbox",
        app_key,
        settings.dropbox_requests_per_second,
        settings.dropbox_requests_burst,
    )


def answer_error(
    status: int,
    *,
    what: str | None = None,
    retry_after: str | float | None = None,
    missing_scope: bool = False,
) -> TransientError | SourceUnavailable:
    """The error an answer of Dropbox with an error `status` means, on either route.

    The API route's requests (`what` None) carry the app's credentials, so a 401 rejects them
    (or says the app lacks a permission: `missing_scope`); the SDK hands over rate limits
    (429, `retry_after` its backoff) and server errors (5xx), and keeps 403, 404 and 409 for
    the route errors it decodes. The ZIP route's one request, the public folder download
    `what` names, carries none: a 401, 403, 404 or 410 says the link is not public, and only
    TRANSIENT_STATUS is worth a retry (`retry_after` as its Retry-After header says)."""
    if what is None:
        if status == 429:
            return TransientError(
                "Dropbox is rate limiting requests; will retry.",
                retry_after=parse_retry_after(retry_after),
            )
        if status >= 500:
            return TransientError(f"Dropbox answered {status}; will retry.", retry_after=None)
        if status == 401:
            return SourceUnavailable(_MISSING_SCOPE if missing_scope else CREDENTIALS_REJECTED)
        return SourceUnavailable(f"Dropbox refused the request (HTTP {status}).")
    if status in TRANSIENT_STATUS:
        return TransientError(
            f"{what}: the server answered {status}; will retry.",
            retry_after=parse_retry_after(retry_after),
        )
    if status in _NOT_PUBLIC_STATUS:
        return SourceUnavailable(f"{what}: not found or not shared publicly (HTTP {status}).")
    return SourceUnavailable(f"{what}: the server refused the request (HTTP {status}).")
