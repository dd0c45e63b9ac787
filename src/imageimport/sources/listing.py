"""Bounds on listing a folder that strangers control.

Two halves:
- `ListingBudget`: how far one walk of a folder tree may go. The sources that page through
  folders (Drive API, Drive's public pages, Dropbox API) report every folder they are about
  to list and every page they ask for; past LISTING_MAX_FOLDERS, LISTING_MAX_PAGES or
  LISTING_MAX_SECONDS, or when a folder's next page token is one it already answered, the
  walk ends with a ListingLimit. The Dropbox ZIP route lists one archive instead, bounded
  by ZIP_MAX_ENTRIES.
- `bounded_listing`: what the planner takes from any route: at most LISTING_MAX_FILES
  files, each with its name and path shortened for display and refused (recorded as a
  failed item with a reason, never downloaded) when what the source needs to read it (an
  id, a resource key, a Dropbox path) is too long to store.

The sources use the same helpers while walking, so what they keep in memory is bounded too:
paths are built already shortened, and seen ids are kept as fixed-size digests.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

from imageimport.errors import ListingLimit
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile

# Names and paths are for people to read; longer ones keep both ends, joined by an ellipsis.
MAX_NAME_CHARS = 255
MAX_PATH_CHARS = 1024
# What a source needs to read a file (ids, resource keys, Dropbox paths) is never shortened:
# a file whose id is longer is refused instead. import_items.remote_id holds 1024 characters.
MAX_ID_CHARS = 512
# Dropbox reads files by path; it recommends paths under 260 characters.
MAX_SOURCE_PATH_CHARS = 2048
# The source-specific data kept per file (import_items.extra), as JSON.
MAX_EXTRA_CHARS = 4096
ELLIPSIS = "…"
_ALREADY_LISTED = "the files listed until then are imported"


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters in the middle, so that its start and end stay."""
    if len(text) <= limit:
        return text
    head = (limit - len(ELLIPSIS)) // 2
    tail = limit - len(ELLIPSIS) - head
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def join_path(prefix: str, name: str) -> str:
    """The path of `name` inside the folder at `prefix`, within MAX_PATH_CHARS; the name
    (within MAX_NAME_CHARS) always fits whole at the end."""
    name = shorten(name, MAX_NAME_CHARS)
    return shorten(f"{prefix}/{name}", MAX_PATH_CHARS) if prefix else name


def too_long(value: str | None, what: str, limit: int = MAX_ID_CHARS) -> str | None:
    """Why `value` cannot be kept ("its id is 2,000 characters long…"), None if it can."""
    if value is None or len(value) <= limit:
        return None
    return f"its {what} is {len(value):,} characters long, more than the {limit:,} accepted"


def refused_file(file_id: str, name: str, path: str, problem: str) -> RemoteFile:
    return RemoteFile(
        id=_stand_in_id(file_id),
        name=shorten(name, MAX_NAME_CHARS),
        path=shorten(path, MAX_PATH_CHARS),
        refused=f"Not imported: {problem}.",
    )


def refused_folder(folder_id: str, name: str, path: str, problem: str) -> RemoteFile:
    """A folder that will not be listed, recorded like a file so that its reason shows."""
    return RemoteFile(
        id=_stand_in_id("folder:" + folder_id),
        name=shorten(name, MAX_NAME_CHARS),
        path=shorten(path, MAX_PATH_CHARS),
        refused=f"This folder was not listed, so none of its files were imported: {problem}.",
    )


def _stand_in_id(raw: str) -> str:
    # Stable, so listing again finds the same item instead of adding another.
    return "refused:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def bounded(file: RemoteFile) -> RemoteFile:
    """`file` as it may be stored: display name and path shortened, refused when what its
    source needs to read it does not fit."""
    if file.refused is None:
        problem = too_long(file.id, "id")
        if problem is None:
            extra = len(json.dumps(file.extra, ensure_ascii=False, default=str))
            if extra > MAX_EXTRA_CHARS:
                problem = (
                    f"the source described it with {extra:,} characters of data, more than "
                    f"the {MAX_EXTRA_CHARS:,} accepted"
                )
        if problem is not None:
            return refused_file(file.id, file.name, file.path, problem)
    name, path = shorten(file.name, MAX_NAME_CHARS), shorten(file.path, MAX_PATH_CHARS)
    if (name, path) == (file.name, file.path):
        return file
    return replace(file, name=name, path=path)


def bounded_listing(files: Iterable[RemoteFile], settings: Settings) -> Iterator[RemoteFile]:
    """Every listed file, bounded; a ListingLimit past LISTING_MAX_FILES."""
    for count, file in enumerate(files, 1):
        if count > settings.listing_max_files:
            raise ListingLimit(
                f"The listing stopped after {settings.listing_max_files:,} files, the limit "
                f"for one import (LISTING_MAX_FILES); {_ALREADY_LISTED}."
            )
        yield bounded(file)


class SeenIds:
    """A set of ids kept as 16-byte digests: its size does not depend on how long the ids
    are, only on how many there are (which the listing limits bound)."""

    def __init__(self, *ids: str) -> None:
        self._digests: set[bytes] = set()
        for value in ids:
            self.add(value)

    def add(self, value: str) -> bool:
        """True if `value` was not seen before."""
        digest = _digest(value)
        if digest in self._digests:
            return False
        self._digests.add(digest)
        return True


def _digest(value: str) -> bytes:
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ListingBudget:
    """One walk of a folder tree, bounded by the LISTING_MAX_* settings; `service` names the
    source in messages ("Google Drive")."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._started = time.monotonic()
        self._folders = 0
        self._pages = 0
        self._folder: str | None = None
        self._tokens = SeenIds()

    def folder(self) -> None:
        """Count a folder about to be queued for listing (the top folder included)."""
        self._folders += 1
        limit = self._settings.listing_max_folders
        if self._folders > limit:
            raise ListingLimit(
                f"The listing stopped at {limit:,} folders, the limit for one import "
                f"(LISTING_MAX_FOLDERS); {_ALREADY_LISTED}."
            )
        self._check_time()

    def page(self, folder: str, token: str | None, shown: str) -> None:
        """Count a request about to be made for `folder` (its first page when `token` is
        None); `shown` names the folder in messages."""
        self._pages += 1
        limit = self._settings.listing_max_pages
        if self._pages > limit:
            raise ListingLimit(
                f"The listing stopped after {limit:,} pages from {self._service}, the limit "
                f"for one import (LISTING_MAX_PAGES); {_ALREADY_LISTED}."
            )
        self._check_time()
        if folder != self._folder:
            self._folder, self._tokens = folder, SeenIds()
        if token is not None and not self._tokens.add(token):
            raise ListingLimit(
                f"The listing stopped: {self._service} answered the same page token twice for "
                f"the folder {shorten(shown, 200)}, so its listing would never end; "
                f"{_ALREADY_LISTED}."
            )

    def _check_time(self) -> None:
        limit = self._settings.listing_max_seconds
        if time.monotonic() - self._started > limit:
            raise ListingLimit(
                f"The listing stopped after {limit:g} seconds, the limit for one import "
                f"(LISTING_MAX_SECONDS); {_ALREADY_LISTED}."
            )
