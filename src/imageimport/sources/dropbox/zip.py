"""A Dropbox shared folder read through its public "download as ZIP" link (no credentials).

The whole folder arrives as one archive, so it is downloaded once into a temporary file
and files are then read out of it. The archive comes from strangers: its size, entry
count, compression ratios, names and flags are all checked before anything is trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imageimport.errors import ItemError, SourceUnavailable
from imageimport.settings import Settings
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.dropbox.links import with_web_base
from imageimport.sources.http import (
    CHUNK_SIZE,
    iter_body,
    make_http_client,
    stream_get,
    with_retries,
)

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


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    file: RemoteFile


class DropboxZipSource(Source):
    provider = "dropbox"
    local_only = True

    def __init__(self, ref: FolderRef, settings: Settings) -> None:
        super().__init__(ref, settings)
        self._load_lock = threading.Lock()
        # zipfile serialises reads of a shared archive itself, but not opening and
        # closing entries; this lock covers those.
        self._handle_lock = threading.Lock()
        self._archive_path: Path | None = None
        self._entries: dict[str, _Entry] = {}
        self._zip: zipfile.ZipFile | None = None

    def list(self) -> Iterator[RemoteFile]:
        self._ensure_loaded()
        for entry in self._entries.values():
            yield entry.file

    @contextmanager
    def open(self, file: RemoteFile) -> Iterator[Iterator[bytes]]:
        archive = self._ensure_loaded()
        entry = self._entries.get(file.id)
        if entry is None:
            raise ItemError(f"{file.path} is no longer in the folder's ZIP download.")
        info = entry.info
        if info.flag_bits & 0x1:
            raise ItemError(f"{file.path} is encrypted inside the folder's ZIP download.")
        if info.compress_type not in _UNPACKED_METHODS:
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise ItemError(
                f"{file.path} is compressed with {method} inside the folder's ZIP download: "
                "only stored and deflate entries, the ones Dropbox makes, are unpacked."
            )
        if _is_bomb(info, self.settings):
            raise ItemError(
                f"{file.path} would unpack to {info.file_size} bytes from only "
                f"{info.compress_size}: refused as a likely zip bomb."
            )
        with self._handle_lock:
            try:
                handle = archive.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as error:
                raise ItemError(f"{file.path} cannot be unpacked: {error}.") from error
        try:
            yield _read_entry(handle, info, file, self.settings)
        finally:
            with self._handle_lock:
                handle.close()

    def close(self) -> None:
        with self._load_lock:
            if self._zip is not None:
                self._zip.close()
                self._zip = None
            self._entries = {}
            if self._archive_path is not None:
                self._archive_path.unlink(missing_ok=True)
                self._archive_path = None

    def _ensure_loaded(self) -> zipfile.ZipFile:
        archive = self._zip
        if archive is not None:
            return archive
        with self._load_lock:
            if self._zip is None:
                path = with_retries(self.settings, self._download)
                try:
                    archive, entries = _index(path, self.settings)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
                self._archive_path = path
                self._entries = entries
                self._zip = archive
            return self._zip

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
                make_http_client(self.settings) as client,
                stream_get(client, url, WHAT) as response,
            ):
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


def _index(path: Path, settings: Settings) -> tuple[zipfile.ZipFile, dict[str, _Entry]]:
    """Open the archive and describe its files, refusing archives that are bombs."""
    max_entries = settings.zip_max_entries
    with path.open("rb") as raw:
        # The end record's count is checked before zipfile reads the whole central
        # directory into memory; the real count is checked again below.
        end_record = zipfile._EndRecData(raw)  # type: ignore[attr-defined]
    if end_record is None:
        raise SourceUnavailable(_NOT_A_ZIP)
    announced = end_record[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if announced > max_entries:
        raise SourceUnavailable(_too_many(announced, max_entries))
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise SourceUnavailable(
            f"The folder's ZIP download from Dropbox is damaged and cannot be read ({error})."
        ) from error
    try:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise SourceUnavailable(_too_many(len(infos), max_entries))
        declared = sum(info.file_size for info in infos)
        if declared > settings.zip_max_total_bytes:
            raise SourceUnavailable(
                f"The folder's ZIP download would unpack to {declared} bytes, more than the "
                f"{settings.zip_max_total_bytes}-byte limit (ZIP_MAX_TOTAL_BYTES)."
            )
        return archive, _describe(infos)
    except BaseException:
        archive.close()
        raise


def _too_many(count: int, limit: int) -> str:
    return (
        f"The folder's ZIP download holds {count} entries, more than the limit of {limit} "
        "(ZIP_MAX_ENTRIES)."
    )


def _describe(infos: list[zipfile.ZipInfo]) -> dict[str, _Entry]:
    files = [
        (info, _raw_parts(info.filename))
        for info in infos
        if not info.filename.endswith(("/", "\\"))
    ]
    # Dropbox puts everything under one folder named after the shared folder.
    firsts = {parts[0] if len(parts) > 1 else None for _, parts in files}
    strip = 1 if len(firsts) == 1 and None not in firsts else 0
    entries: dict[str, _Entry] = {}
    for info, parts in files:
        clean = [part for part in map(_clean_part, parts[strip:]) if part]
        if not clean:
            continue
        path = "/".join(clean)
        file_id, number = _entry_id(path), 1
        while file_id in entries:  # the same name twice in one archive
            number += 1
            file_id = _entry_id(f"{path}#{number}")
        remote = RemoteFile(id=file_id, name=clean[-1], path=path, size=info.file_size)
        entries[file_id] = _Entry(info=info, file=remote)
    return entries


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


def _is_bomb(info: zipfile.ZipInfo, settings: Settings) -> bool:
    ratio_limit = settings.zip_max_ratio * max(info.compress_size, 1)
    return info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > ratio_limit


def _read_entry(
    handle: IO[bytes], info: zipfile.ZipInfo, file: RemoteFile, settings: Settings
) -> Iterator[bytes]:
    # Headers can lie; never hand out more than the entry declared (or the global limit).
    limit = min(info.file_size, settings.zip_max_total_bytes)
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
                f"{file.path} unpacks to more than the {info.file_size} bytes its header "
                "declares: refused as a likely zip bomb."
            )
        yield chunk
