"""A Dropbox shared folder read through its public "download as ZIP" link (no credentials).

The whole folder arrives as one archive, so it is downloaded once into a temporary file
and files are then read out of it. The archive comes from strangers: its size, entry
count, compression ratios, names and flags are all checked before anything is trusted, and
what it costs the process is bounded whatever it contains: its central directory is never
held in memory (zip_directory.py), each file costs its index a few dozen bytes, and a process
keeps at most ZIP_MAX_OPEN_ARCHIVES archives open (open_archives.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from imageimport.errors import ItemError, SourceUnavailable
from imageimport.settings import Settings
from imageimport.sources import transfer
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.budget import SlotBook
from imageimport.sources.dropbox.common import answer_error, dropbox_budget
from imageimport.sources.dropbox.links import with_web_base
from imageimport.sources.dropbox.open_archives import Lease, shared_places
from imageimport.sources.dropbox.zip_directory import (
    Directory,
    Index,
    Location,
    Record,
    find_directory,
    open_entry,
    records,
)
from imageimport.sources.http import (
    CHUNK_SIZE,
    iter_body,
    make_http_client,
    open_stream,
    with_retries,
)
from imageimport.sources.listing import MAX_NAME_CHARS, MAX_PATH_CHARS, shorten

log = logging.getLogger(__name__)

WHAT = "The Dropbox folder download"
# Entries smaller than this are never called bombs: tiny files of zeros compress very well.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
MAX_PLAIN_ID_CHARS = 500
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# The methods Dropbox's folder downloads use: stored, and deflate. zipfile inflates deflate
# with a bound on each read's output (zlib's max_length: one read never yields more than it
# asked for), but hands bzip2 and LZMA (and any method a later Python adds) a whole block of
# compressed bytes to inflate at once, whatever the header declares: a 1 kB entry can unpack
# to gigabytes in one call. Only the bounded methods are ever opened.
_UNPACKED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_METHOD_NAMES = {
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "LZMA",
    9: "Deflate64",
    93: "Zstandard",
    95: "XZ",
    98: "PPMd",
}
_NOT_A_ZIP = (
    "Dropbox answered with a web page instead of the folder's ZIP download: the link is "
    "private, was removed, or the folder is too big for Dropbox to offer as one ZIP "
    "(setting Dropbox app credentials imports it file by file instead)."
)


class _Archive:
    """A downloaded archive and the index of its files, for as long as its lease lasts."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.directory: Directory | None = None
        self.index = Index()
        self.strip = 0
        self.lease: Lease | None = None

    def discard(self) -> None:
        self.index = Index()
        path, self.path = self.path, None
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


class DropboxZipSource(Source):
    provider = "dropbox"
    local_only = True

    def __init__(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> None:
        super().__init__(ref, settings, slots)
        self._load_lock = threading.Lock()  # one download and indexing at a time
        self._lock = threading.Lock()  # for the two below; never held while waiting
        self._archive: _Archive | None = None
        self._closed = False

    def list(self) -> Iterator[RemoteFile]:
        with self._using() as archive:
            numbers: dict[int, int] = {}
            for record, path, ordinal in _files(archive):
                file_id = _recall_id(archive.index, path, ordinal, numbers)
                if file_id is None:
                    continue
                yield RemoteFile(
                    id=file_id,
                    name=shorten(path.rpartition("/")[2], MAX_NAME_CHARS),
                    path=shorten(path, MAX_PATH_CHARS),
                    size=record.location.file_size,
                    modified=record.modified,
                )

    @contextmanager
    def open(self, file: RemoteFile) -> Iterator[Iterator[bytes]]:
        with self._using() as archive:
            path, entry = archive.path, archive.index.find(file.id)
            if entry is None or path is None:
                raise ItemError(f"{file.path} is no longer in the folder's ZIP download.")
            if entry.flag_bits & 0x1:
                raise ItemError(f"{file.path} is encrypted inside the folder's ZIP download.")
            if entry.compress_type not in _UNPACKED_METHODS:
                method = _METHOD_NAMES.get(entry.compress_type, f"method {entry.compress_type}")
                raise ItemError(
                    f"{file.path} is compressed with {method} inside the folder's ZIP download: "
                    "only stored and deflate entries, the ones Dropbox makes, are unpacked."
                )
            if _is_bomb(entry, self.settings):
                raise ItemError(
                    f"{file.path} would unpack to {entry.file_size} bytes from only "
                    f"{entry.compress_size}: refused as a likely zip bomb."
                )
            try:
                handle = open_entry(path, entry, file.name)
            except (zipfile.BadZipFile, NotImplementedError, OSError) as error:
                raise ItemError(f"{file.path} cannot be unpacked: {error}.") from error
            with handle:
                yield _read_entry(handle, entry, file, self.settings)

    def close(self) -> None:
        """Let the archive go, at once: not waiting for a download or a place in progress
        (an import cancelled meanwhile); what such a load brings is let go after its use."""
        with self._lock:
            archive, self._archive = self._archive, None
            self._closed = True
        if archive is not None and archive.lease is not None:
            archive.lease.close()

    @contextmanager
    def _using(self) -> Iterator[_Archive]:
        """The archive, downloaded and indexed first if need be, kept open while the block
        runs."""
        with self._load_lock:
            with self._lock:
                archive = self._archive
            if archive is None or archive.lease is None or not archive.lease.enter():
                archive = self._load()
                with self._lock:
                    self._archive = archive
            lease = archive.lease
            assert lease is not None
        try:
            yield archive
        finally:
            lease.leave()
            if self._closed:
                self.close()

    def _load(self) -> _Archive:
        """A place among the process's open archives (waiting for one if need be), then the
        archive in it: returned in use once."""
        archive = _Archive()
        archive.lease = shared_places(self.settings.zip_max_open_archives).lease(
            archive.discard, _stop_if_interrupted
        )
        try:
            archive.path = with_retries(self.settings, self._download)
            archive.directory, archive.strip = _survey(archive.path, self.settings)
            _index(archive)
        except BaseException:
            archive.lease.close()
            raise
        return archive

    def _download(self) -> Path:
        url = with_web_base(self.ref.url, self.settings)
        url += ("&" if "?" in url else "?") + "dl=1"
        limit = self.settings.zip_max_total_bytes
        from imageimport.tempfiles import DROPBOX_ZIPS  # owner-named, so crash leftovers go

        descriptor, name = tempfile.mkstemp(**DROPBOX_ZIPS.mkstemp_arguments())
        path = Path(name)
        try:
            with (
                os.fdopen(descriptor, "wb") as out,
                make_http_client(
                    self.settings, dropbox_budget(self.settings, self.slots, None)
                ) as client,
                open_stream(client, "GET", url, WHAT) as response,
            ):
                if response.status_code >= 400:
                    raise answer_error(
                        response.status_code,
                        what=WHAT,
                        retry_after=response.headers.get("Retry-After"),
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise SourceUnavailable(_too_big(int(declared), limit))
                received = 0
                for chunk in iter_body(response, WHAT):
                    received += len(chunk)
                    if received > limit:
                        raise SourceUnavailable(_too_big(received, limit))
                    out.write(chunk)
            _check_magic(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        log.info("Downloaded Dropbox folder ZIP %s (%d bytes).", self.ref.folder_id, received)
        return path


def _stop_if_interrupted() -> None:
    """Called while waiting for a place among the open archives: a file whose download is
    stopped (this process is stopping) goes back to the queue instead of waiting on."""
    current = transfer.current()
    if current is not None and current.reason is not None:
        raise current.reason


def _check_magic(path: Path) -> None:
    # Checked once the body is complete: a connection dropped after a few bytes must
    # stay a retryable error, not look like a web page. zipfile would accept data
    # before the archive (self-extractors); a real Dropbox ZIP starts at byte 0.
    with path.open("rb") as archive:
        if archive.read(4) not in _ZIP_MAGIC:
            raise SourceUnavailable(_NOT_A_ZIP)


def _too_big(size: int, limit: int) -> str:
    return (
        f"The folder's ZIP download is bigger than the {limit}-byte limit "
        f"(ZIP_MAX_TOTAL_BYTES) at {size} bytes or more."
    )


def _survey(path: Path, settings: Settings) -> tuple[Directory, int]:
    """Check the archive against the limits, reading its central directory once, a record at
    a time: where the directory is, and how many leading folders the paths share (1 when
    every file is under one top folder, as in Dropbox's downloads; else 0)."""
    with path.open("rb", buffering=0) as raw:
        try:
            directory = find_directory(raw)
        except (zipfile.BadZipFile, OSError) as error:
            raise _damaged(error) from error
        if directory is None:
            raise SourceUnavailable(_NOT_A_ZIP)
        # Both before a record is read: the end record's count and size (the real count is
        # checked again as the records come).
        max_entries = settings.zip_max_entries
        if directory.announced > max_entries:
            raise SourceUnavailable(_too_many(directory.announced, max_entries))
        if directory.size > settings.zip_max_index_bytes:
            raise SourceUnavailable(
                f"The folder's ZIP download has a central directory (its table of contents) "
                f"of {directory.size:,} bytes, more than the {settings.zip_max_index_bytes:,}"
                "-byte limit (ZIP_MAX_INDEX_BYTES)."
            )
        count = declared = 0
        top: str | None = None
        shared_top = True
        for record in _records(raw, directory):
            count += 1
            if count > max_entries:  # stopped at once: the rest may be millions
                raise SourceUnavailable(_too_many(count, max_entries, at_least=True))
            declared += record.location.file_size
            if _is_folder(record) or not shared_top:
                continue
            parts = _raw_parts(record.name)
            first = parts[0] if len(parts) > 1 else None
            if first is None or (top is not None and first != top):
                shared_top = False
            top = first
    if declared > settings.zip_max_total_bytes:
        raise SourceUnavailable(
            f"The folder's ZIP download would unpack to {declared} bytes, more than the "
            f"{settings.zip_max_total_bytes}-byte limit (ZIP_MAX_TOTAL_BYTES)."
        )
    return directory, 1 if shared_top and top is not None else 0


def _index(archive: _Archive) -> None:
    """Index every file of the archive under its id (see `_entry_id`); the same path twice
    gets `#2`, `#3`... in the order of the central directory."""
    numbers: dict[int, int] = {}  # ordinal of a path's first entry -> last number given
    for record, path, _ in _files(archive):
        for file_id, _ in _candidate_ids(archive.index, path, numbers):
            if archive.index.add(file_id, record.location):
                break


def _recall_id(index: Index, path: str, ordinal: int, numbers: dict[int, int]) -> str | None:
    """The id `_index` gave the `ordinal`-th file, asked in the same order (`numbers` as
    there, kept by the caller from one file to the next)."""
    for file_id, found in _candidate_ids(index, path, numbers):
        if found == ordinal:
            return file_id
        if found is None:
            return None  # not indexed: only if the archive changed under us
    return None


def _candidate_ids(
    index: Index, path: str, numbers: dict[int, int]
) -> Iterator[tuple[str, int | None]]:
    """The ids a file at `path` may have, in the order they are given, each with the ordinal
    of the file that has it. The numbers go on from the last one given for the same path, so
    that many entries of one path cost one try each, not one for every earlier one."""
    file_id = _entry_id(path)
    first = index.ordinal(file_id)
    yield file_id, first
    if first is None:
        return
    number = numbers.get(first, 1)
    while True:
        number += 1
        numbers[first] = number
        file_id = _entry_id(f"{path}#{number}")
        yield file_id, index.ordinal(file_id)


def _files(archive: _Archive) -> Iterator[tuple[Record, str, int]]:
    """Each file of the archive, with its clean path and its ordinal among the files (the
    order of the central directory, which the index keeps)."""
    assert archive.path is not None and archive.directory is not None
    ordinal = 0
    with archive.path.open("rb", buffering=0) as raw:
        for record in _records(raw, archive.directory):
            if _is_folder(record):
                continue
            parts = _raw_parts(record.name)[archive.strip :]
            clean = [part for part in map(_clean_part, parts) if part]
            if not clean:
                continue
            yield record, "/".join(clean), ordinal
            ordinal += 1


def _records(raw: BinaryIO, directory: Directory) -> Iterator[Record]:
    try:
        yield from records(raw, directory)
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as error:
        raise _damaged(error) from error


def _damaged(error: BaseException) -> SourceUnavailable:
    return SourceUnavailable(
        f"The folder's ZIP download from Dropbox is damaged and cannot be read ({error})."
    )


def _is_folder(record: Record) -> bool:
    return record.name.endswith(("/", "\\"))


def _too_many(count: int, limit: int, at_least: bool = False) -> str:
    return (
        f"The folder's ZIP download holds {count} entries{' or more' if at_least else ''}, "
        f"more than the limit of {limit} (ZIP_MAX_ENTRIES)."
    )


def _entry_id(path: str) -> str:
    # Ids are stored in a bounded column; archive paths are not bounded (a 1,000-character
    # name inside a folder), so long ones are replaced by their digest.
    if len(path) <= MAX_PLAIN_ID_CHARS:
        return f"zip:{path}"
    return f"zip:sha256:{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _raw_parts(name: str) -> list[str]:
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _clean_part(part: str) -> str:
    """A path component that cannot climb out or carry control characters ("" to drop)."""
    part = "".join(ch for ch in part if ch >= " " and ch != "\x7f")
    return "" if part in (".", "..") else part


def _is_bomb(entry: Location, settings: Settings) -> bool:
    ratio_limit = settings.zip_max_ratio * max(entry.compress_size, 1)
    return entry.file_size > RATIO_CHECK_MIN_BYTES and entry.file_size > ratio_limit


def _read_entry(
    handle: zipfile.ZipExtFile, entry: Location, file: RemoteFile, settings: Settings
) -> Iterator[bytes]:
    # Headers can lie; never hand out more than the entry declared (or the global limit).
    limit = min(entry.file_size, settings.zip_max_total_bytes)
    produced = 0
    while True:
        try:
            chunk = handle.read(CHUNK_SIZE)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise ItemError(f"{file.path} is damaged inside the folder's ZIP download.") from error
        if not chunk:
            return
        produced += len(chunk)
        if produced > limit:
            raise ItemError(
                f"{file.path} unpacks to more than the {entry.file_size} bytes its header "
                "declares: refused as a likely zip bomb."
            )
        yield chunk
