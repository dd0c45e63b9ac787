"""Temporary files that name the process owning them, so a sweep can tell what a dead process
left behind from what a live one is still using, whatever container, pid namespace or machine
either runs in.

Each process has a random owner id. Before it creates a temporary file in a directory, it holds
an exclusive flock on `<prefix><owner>.lock` in that directory; its files there are named
`<prefix><owner>-<random><suffix>`. The kernel drops the lock when the process dies (kill -9,
the OOM killer, a reboot), so a sweep that can take the lock knows the owner is gone and removes
its files. Process ids are never compared: they repeat across containers and reboots.

The files of an owner that cannot be checked (names written by older versions, a filesystem
without locks) are removed once unchanged for `max_age` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

log = logging.getLogger(__name__)

# flock answers these where the filesystem keeps no locks (some network and FUSE mounts).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_OWNER_HEX = 16


class _OwnerLock:
    """This process's lock file in one directory, held while `users` > 0 or once pinned."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.users = 0
        self.pinned = False

    def hold(self) -> None:
        # A sweep may take the file between our open and our flock, see no temporary files
        # of ours and delete it: then our lock is on a deleted file, so check the name again.
        while self.fd is None or not _names(self.path, self.fd):
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as error:
                if error.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise
                # Sweeps cannot lock here either: they fall back to the files' age.
                log.debug("no file locks in %s: temporary files there age out", self.path.parent)
            self.fd = fd

    def drop(self) -> None:
        if self.fd is None:
            return
        if _names(self.path, self.fd):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _names(path: Path, fd: int) -> bool:
    """Whether `path` is still the file open as `fd`."""
    try:
        named = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


class _Owner:
    def __init__(self) -> None:
        self.id = secrets.token_hex(_OWNER_HEX // 2)
        self.locks: dict[Path, _OwnerLock] = {}
        self.mutex = threading.Lock()

    def acquire(self, directory: Path, prefix: str, pin: bool) -> None:
        path = directory / f"{prefix}{self.id}.lock"
        with self.mutex:
            lock = self.locks.setdefault(path, _OwnerLock(path))
            lock.hold()
            lock.users += 1
            lock.pinned |= pin

    def release(self, directory: Path, prefix: str) -> None:
        path = directory / f"{prefix}{self.id}.lock"
        with self.mutex:
            lock = self.locks[path]
            lock.users -= 1
            if lock.users == 0 and not lock.pinned:
                # Nothing of ours left here: no lock file lingers while the process lives on.
                lock.drop()
                del self.locks[path]

    def drop_all(self) -> None:
        with self.mutex:
            for lock in self.locks.values():
                with contextlib.suppress(OSError):
                    lock.drop()
            self.locks.clear()


_owner = _Owner()


class MkstempArguments(TypedDict):
    prefix: str
    suffix: str
    dir: str


def _new_owner_in_child() -> None:
    # A forked child must not hold (or later delete) its parent's locks.
    global _owner
    for lock in _owner.locks.values():
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
    _owner = _Owner()


os.register_at_fork(after_in_child=_new_owner_in_child)
atexit.register(lambda: _owner.drop_all())


def owner_id() -> str:
    return _owner.id


@dataclass(frozen=True)
class TempFiles:
    """Temporary files of one kind (`prefix`, `suffix`) in one directory (by default the
    system's temporary directory, as `tempfile` chooses it)."""

    prefix: str
    suffix: str
    directory: Path | None = None

    def where(self) -> Path:
        return self.directory if self.directory is not None else Path(tempfile.gettempdir())

    def mkstemp_arguments(self) -> MkstempArguments:
        """`prefix`, `suffix` and `dir` for `tempfile.mkstemp`, for a caller that deletes the
        file whenever it is done with it: the owner lock is held from now until the process
        ends."""
        directory = self.where()
        _owner.acquire(directory, self.prefix, pin=True)
        return self._arguments(directory)

    @contextmanager
    def new(self) -> Iterator[tuple[int, str]]:
        """A new file that the caller renames or deletes before the block ends."""
        directory = self.where()
        _owner.acquire(directory, self.prefix, pin=False)
        try:
            yield tempfile.mkstemp(**self._arguments(directory))
        finally:
            _owner.release(directory, self.prefix)

    def _arguments(self, directory: Path) -> MkstempArguments:
        return {
            "prefix": f"{self.prefix}{_owner.id}-",
            "suffix": self.suffix,
            "dir": str(directory),
        }

    def sweep(self, max_age: float) -> int:
        """Remove the files of owners that are gone; the number removed."""
        directory = self.where()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        owned = re.compile(
            rf"{re.escape(self.prefix)}([0-9a-f]{{{_OWNER_HEX}}})"
            rf"(?:-.*{re.escape(self.suffix)}|(\.lock))",
            re.DOTALL,
        )
        files: dict[str, list[Path]] = {}
        locks: set[str] = set()
        unowned: list[Path] = []
        for entry in entries:
            if not entry.name.startswith(self.prefix) or not entry.is_file(follow_symlinks=False):
                continue
            match = owned.fullmatch(entry.name)
            if match is None:
                if entry.name.endswith(self.suffix):
                    unowned.append(Path(entry.path))
            elif match[2]:
                locks.add(match[1])
            else:
                files.setdefault(match[1], []).append(Path(entry.path))
        removed = sum(_remove_if_older(path, max_age) for path in unowned)
        for owner in (files.keys() | locks) - {_owner.id}:
            removed += _sweep_owner(
                directory / f"{self.prefix}{owner}.lock", files.get(owner, []), max_age
            )
        return removed


def _sweep_owner(lock_path: Path, files: list[Path], max_age: float) -> int:
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        # Owners create their lock file before any file: this one is gone.
        return sum(_remove(path) for path in files)
    except OSError as error:
        log.debug("cannot check the owner of %s: %s", lock_path, error)
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # alive
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            kept = [path for path in files if not _remove_if_older(path, max_age)]
            if not kept:
                _remove_if_older(lock_path, max_age)
            return len(files) - len(kept)
        removed = sum(_remove(path) for path in files)
        # Still ours (held) and still at that name: a new owner never reuses an id.
        if _names(lock_path, fd):
            _remove(lock_path)
        return removed
    finally:
        os.close(fd)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        log.warning("cannot remove the leftover %s: %s", path, error.strerror or error)
        return False
    log.info("removed %s, left by a process that is gone", path)
    return True


def _remove_if_older(path: Path, max_age: float) -> bool:
    try:
        changed = path.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return False
    return time.time() - changed > max_age and _remove(path)


# The Dropbox ZIP route downloads a whole folder into one of these (up to ZIP_MAX_TOTAL_BYTES).
DROPBOX_ZIPS = TempFiles("imageimport-dropbox-", ".zip")
