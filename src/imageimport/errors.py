"""Errors whose message is meant for the user: no traceback should ever be needed."""

from __future__ import annotations

from typing import Literal


class ImageImportError(Exception):
    """Base class; `str(error)` is a complete, human-readable sentence."""


class ConfigError(ImageImportError):
    pass


class DatabaseError(ImageImportError):
    """A statement the database refused or could not run: `imageimport.db` turns SQLAlchemy's
    errors into these. `kind` is the DB-API class of the failure (e.g. "IntegrityError"),
    which names no host and no user: safe to show where the message is not."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class DatabaseUnavailable(DatabaseError):
    """The database cannot be used right now (unreachable, not answering in time, locked, or
    without its tables): worth trying again later."""


class InvalidSourceURL(ImageImportError):
    pass


class SourceUnavailable(ImageImportError):
    """The folder is missing, private, or otherwise cannot be listed at all."""


class ListingLimit(ImageImportError):
    """A listing was stopped by one of its bounds (LISTING_MAX_*, or a page token the source
    answered twice): what was listed until then is imported all the same."""


class SyncRefused(ImageImportError):
    """A sync round was asked for while a round or the import itself is still running."""


class TransientError(ImageImportError):
    """Worth trying again later (429, 5xx, timeouts, dropped connections)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreFull(TransientError):
    """The object store has no room left: retried (space may be freed), then the item fails."""


class ItemError(ImageImportError):
    """One file cannot be imported; the rest of the import goes on."""

    # The state the file is settled in (one of db.models.ItemState).
    state: Literal["failed", "skipped"] = "failed"


class ItemSkipped(ItemError):
    """Not an error of the file, just not something we import (e.g. not an image)."""

    state = "skipped"


class NotAnImage(ItemSkipped):
    pass


class FileTooLarge(ItemError):
    pass


class CorruptImage(ItemError):
    pass


class ImageTooLarge(ItemError):
    """Decoding the image would take more memory than the whole decode budget."""


class ForbiddenHost(ImageImportError):
    """A request would have left the configured source hosts."""

    def __init__(self, host: str) -> None:
        super().__init__(f"Refused to contact {host}: it is not a configured source host.")
        self.host = host


class UnusableAnswer(ItemError, SourceUnavailable):
    """A source answered in a way no retry will change: a redirect loop, an invalid address to
    go to, a body compressed in more layers or codings than are accepted, or a garbled one.
    Both kinds: while downloading, that file fails at once; while listing, the listing does."""
