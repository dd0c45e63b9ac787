"""Objects as plain files under one folder: the zero-configuration default."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imageimport.errors import ConfigError, StoreFull
from imageimport.storage import TEMP_PREFIX, validate_key, validate_prefix
from imageimport.storage.base import ObjectStore
from imageimport.tempfiles import TempFiles

_COPY_CHUNK = 1024 * 1024
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class LocalStore(ObjectStore):
    name = "local"

    temp_files: TempFiles

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root).absolute()
        # fsync costs a disk flush per object; only worth it where a power cut must not lose
        # objects the database already points at.
        self.fsync = fsync
        # Partial objects are written in the root, not next to their key, so finding what a
        # crashed process left reads one directory, not the whole store.
        self.temp_files = TempFiles(TEMP_PREFIX, ".part", self.root)
        self._old_leftovers_checked = False

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root / key
        # A symlink inside the root could still point elsewhere; refuse to follow it out.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"Refusing object key {key!r}: it resolves outside {self.root}.")
        return path

    def put_file(self, key: str, fileobj: BinaryIO, size: int, content_type: str) -> None:
        try:
            self._write(key, fileobj, size)
        except OSError as error:
            if error.errno not in _NO_SPACE:
                raise
            raise StoreFull(
                f"The object store is full ({error.strerror or 'no space left'})."
            ) from error

    def _write(self, key: str, fileobj: BinaryIO, size: int) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.temp_files.new() as (handle, temp_name):
            self._fill(key, path, handle, temp_name, fileobj, size)
        if self.fsync:
            _fsync_directory(path.parent)

    def _fill(
        self, key: str, path: Path, handle: int, temp_name: str, fileobj: BinaryIO, size: int
    ) -> None:
        try:
            with os.fdopen(handle, "wb") as out:
                remaining = size
                while remaining > 0:
                    chunk = fileobj.read(min(_COPY_CHUNK, remaining))
                    if not chunk:
                        raise ValueError(
                            f"The data for {key!r} ended after {size - remaining} bytes, "
                            f"but {size} were announced."
                        )
                    out.write(chunk)
                    remaining -= len(chunk)
                if fileobj.read(1):
                    raise ValueError(f"The data for {key!r} is longer than the {size} announced.")
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            # mkstemp creates 0600 files; objects are not secrets of this process.
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        path = self._path(key)
        # Opened now, not on first next(), so a missing object fails at the call site.
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None
        return _read_chunks(handle, chunk_size)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(key).unlink()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        # Only walk the folder the prefix can live in, not the whole store.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for directory, dirnames, filenames in os.walk(start):
            dirnames.sort()
            relative = Path(directory).relative_to(self.root).as_posix()
            base = "" if relative == "." else relative + "/"
            for filename in sorted(filenames):
                if filename.startswith(TEMP_PREFIX):
                    continue
                key = base + filename
                if key.startswith(prefix):
                    yield key

    def remove_leftovers(self, max_age_seconds: float) -> int:
        """Versions before owner-named temporary files wrote them next to their key: look for
        those once per process, and remove them once unchanged for `max_age_seconds` (their
        writer cannot be checked). Today's are swept from the root with `temp_files`."""
        if self._old_leftovers_checked:
            return 0
        removed = 0
        for directory, _, filenames in os.walk(self.root):
            if Path(directory) == self.root:
                continue
            if any(name.startswith(TEMP_PREFIX) for name in filenames):
                old = TempFiles(TEMP_PREFIX, ".part", Path(directory))
                removed += old.sweep(max_age_seconds)
        self._old_leftovers_checked = True
        return removed

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"The local object store folder {self.root} cannot be created: "
                f"{error.strerror or error}."
            ) from error
        try:
            with tempfile.TemporaryFile(prefix=TEMP_PREFIX, dir=self.root) as probe:
                probe.write(b"ok")
        except OSError as error:
            raise ConfigError(
                f"The local object store folder {self.root} is not writable: "
                f"{error.strerror or error}."
            ) from error


def _read_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
