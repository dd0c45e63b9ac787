"""Stream one remote file to a spooled temporary file, hashing as it arrives (and checking it
against the source's checksum, when the source gives one), within a wall-clock deadline and
above a minimum speed.

Both are enforced from outside the downloading thread: a server that drips a byte every few
seconds never fills a chunk, so the loop below would not run again for days. A watchdog
thread looks at every download twice a second and cuts the connection of one that must end
(`sources.transfer`), which wakes the blocked read at once."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from imageimport import metrics
from imageimport.errors import FileTooLarge, ImageImportError, ItemError, NotAnImage, TransientError
from imageimport.pipeline.imaging import SNIFF_BYTES, sniff
from imageimport.settings import Settings
from imageimport.sources import transfer
from imageimport.sources.base import RemoteFile, Source
from imageimport.sources.checksums import verifier
from imageimport.sources.transfer import Transfer

log = logging.getLogger(__name__)

# Small files stay in memory; anything larger rolls over to disk.
SPOOL_BYTES = 8 * 1024 * 1024
HEARTBEAT_SECONDS = 5.0
# How often the watchdog looks at each download: the bounds below hold to within this.
TICK_SECONDS = 0.5


class DownloadTooSlow(TransientError):
    """The body stalled below the minimum speed. Retried: honest links stall too (a congested
    path, a CDN hiccup), and a fresh connection usually does better; MAX_DELIVER bounds it."""


class DownloadTookTooLong(ItemError):
    """The body kept above the minimum speed yet did not arrive within the deadline. Not
    retried: the next attempt starts again from the first byte and would most likely end the
    same way, each time holding a slot for the whole deadline."""


class Interrupted(ImageImportError):
    """This process is stopping. Not an attempt: the file goes back to the queue as it was."""


# The option by which an import downloads less of each file than MAX_FILE_SIZE_BYTES allows
# (an ImageImport's spec.options.maxFileSizeBytes), checked when the import is started.
MAX_FILE_SIZE_OPTION = "maxFileSizeBytes"


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    deadline_seconds: float
    min_bytes_per_second: int  # 0: no minimum
    low_speed_seconds: float
    max_bytes_from: str = "MAX_FILE_SIZE_BYTES"  # which limit max_bytes is, for the reason

    @classmethod
    def of(cls, settings: Settings, options: Mapping[str, Any] | None = None) -> Limits:
        """The installation's limits, with the import's own size limit (`options`) when it
        is lower. Never higher: MAX_FILE_SIZE_BYTES may have been lowered since the import
        started, and imports recorded before options were checked may hold anything."""
        max_bytes, max_bytes_from = settings.max_file_size_bytes, "MAX_FILE_SIZE_BYTES"
        asked = (options or {}).get(MAX_FILE_SIZE_OPTION)
        if type(asked) is int and 0 < asked < max_bytes:
            max_bytes, max_bytes_from = asked, f"the import's {MAX_FILE_SIZE_OPTION}"
        return cls(
            max_bytes,
            settings.download_deadline_seconds,
            settings.download_min_bytes_per_second,
            settings.download_low_speed_seconds,
            max_bytes_from,
        )


@dataclass
class Download:
    file: BinaryIO
    size: int
    sha256: str
    format: str
    # The source's checksum that the bytes matched, None when the route gives none. Not the
    # listed one when the file changed after it was listed.
    checksum: str | None


def _too_large(limits: Limits) -> FileTooLarge:
    mib = limits.max_bytes / 1024 / 1024
    amount = f"{mib:.1f} MiB" if mib >= 1 else f"{limits.max_bytes:,} bytes"
    return FileTooLarge(f"File too large: more than {amount} ({limits.max_bytes_from}).")


def download(
    source: Source,
    remote: RemoteFile,
    limits: Limits,
    heartbeat: Callable[[], None] | None = None,
    abort: threading.Event | None = None,
) -> Download:
    """The file's bytes, sha256 and announced format. Stops reading as soon as the content
    is known not to be an image or passes `max_bytes`, so neither costs a full download.

    Raises DownloadTooSlow, DownloadTookTooLong, ChecksumMismatch when the bytes are not the
    ones the source's checksum describes, or Interrupted once `abort` is set."""
    if remote.size is not None and remote.size > limits.max_bytes:
        raise _too_large(limits)
    watch = _Watch(limits, heartbeat, abort)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
    try:
        with _WATCHDOG.watching(watch), transfer.active(watch.transfer):
            try:
                size, sha256, fmt, checksum = _receive(source, remote, limits, watch, spool)
            except Exception as error:
                # A cut connection surfaces as whatever the library makes of it (a dropped
                # connection, a short body): the reason is why it was cut.
                reason = watch.transfer.reason
                if reason is not None and reason is not error:
                    raise reason from error
                raise
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    # Opened in binary mode (w+b), so a BinaryIO; typeshed only knows it as an IO[bytes].
    return Download(cast(BinaryIO, spool), size, sha256, fmt, checksum)


def _receive(
    source: Source, remote: RemoteFile, limits: Limits, watch: _Watch, spool: IO[bytes]
) -> tuple[int, str, str, str | None]:
    digest = hashlib.sha256()
    check = verifier(remote.checksum, source.checksums, remote.path)
    size = 0
    head = b""
    fmt: str | None = None
    with source.open(remote) as chunks:
        for chunk in chunks:
            watch.raise_if_cut()
            watch.body_started()
            if fmt is None:
                head += chunk[:SNIFF_BYTES]
                if len(head) >= SNIFF_BYTES:
                    fmt = _sniffed(head)
            size += len(chunk)
            watch.received = size
            if size > limits.max_bytes:
                raise _too_large(limits)
            digest.update(chunk)
            if check is not None:
                check.update(chunk)
            spool.write(chunk)
            metrics.BYTES.inc(len(chunk))
    # The deadline and the minimum speed are the body's: asking the source for the checksum
    # again (a request that may wait for its slot in the request budget) is not timed by them.
    watch.body_ended()
    # A cut can also look like a clean end (a body delimited by the connection closing).
    watch.raise_if_cut()
    checksum = None if check is None else check.verify(lambda: source.checksum_now(remote))
    if size == 0:
        raise NotAnImage("Not an image: the file is empty.")
    if fmt is None:
        fmt = _sniffed(head)
    return size, digest.hexdigest(), fmt, checksum


def _sniffed(head: bytes) -> str:
    fmt = sniff(head)
    if fmt is None:
        raise NotAnImage("Not an image: the content is not a supported image format.")
    return fmt


class _Watch:
    """What the watchdog knows of one download. The clocks start with the body: when the
    source hands its response over, or with the first chunk of a source that has none (a
    ZIP entry read from the archive on disk). Connecting and waiting for the answer are
    bounded by the source's own timeouts and retry policy instead, and so is waiting for a
    slot in the source's request budget, which comes before the request. The clocks stop with
    the body."""

    def __init__(
        self,
        limits: Limits,
        heartbeat: Callable[[], None] | None,
        abort: threading.Event | None,
    ) -> None:
        self.limits = limits
        self.heartbeat = heartbeat
        self.abort = abort
        self.transfer = Transfer()
        self.received = 0  # bytes the loop has seen; written by the downloading thread only
        self._first_chunk_at: float | None = None
        self._started_at: float | None = None
        self._ended = False
        # (time, bytes received then): enough of the recent past to measure the speed over
        # the low-speed window.
        self._samples: deque[tuple[float, int]] = deque()
        self._last_beat = time.monotonic()

    def body_started(self) -> None:
        if self._first_chunk_at is None:
            self._first_chunk_at = time.monotonic()

    def body_ended(self) -> None:
        self._ended = True

    def raise_if_cut(self) -> None:
        reason = self.transfer.reason
        if reason is not None:
            raise reason

    def tick(self, now: float) -> None:
        if self.abort is not None and self.abort.is_set():
            self.transfer.cut(
                Interrupted("The download was interrupted: this process is stopping.")
            )
            return
        if self.heartbeat is not None and now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            with contextlib.suppress(Exception):
                self.heartbeat()
        if self._ended:
            return
        if self._started_at is None:
            starts = [t for t in (self.transfer.attached_at, self._first_chunk_at) if t is not None]
            if not starts:
                return
            self._started_at = min(starts)
            self._samples.append((self._started_at, 0))
        limits = self.limits
        elapsed = now - self._started_at
        if elapsed > limits.deadline_seconds:
            self.transfer.cut(
                DownloadTookTooLong(
                    f"The download took longer than {limits.deadline_seconds:g} seconds "
                    "(DOWNLOAD_DEADLINE_SECONDS) and was stopped."
                )
            )
            return
        if not limits.min_bytes_per_second:
            return
        received = max(self.received, self.transfer.received())
        self._samples.append((now, received))
        horizon = now - limits.low_speed_seconds
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.popleft()
        if elapsed < limits.low_speed_seconds:
            return
        if received - self._samples[0][1] < limits.min_bytes_per_second * limits.low_speed_seconds:
            self.transfer.cut(
                DownloadTooSlow(
                    f"The download was too slow: less than {limits.min_bytes_per_second} bytes "
                    f"per second over {limits.low_speed_seconds:g} seconds "
                    "(DOWNLOAD_MIN_BYTES_PER_SECOND, DOWNLOAD_LOW_SPEED_SECONDS)."
                )
            )


class _Watchdog:
    """One thread for every download of the process; it runs only while there are some."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, watch: _Watch) -> Iterator[None]:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="download-watchdog", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._lock:
                watches = list(self._watches)
                if not watches:
                    self._thread = None
                    return
            now = time.monotonic()
            for watch in watches:
                try:
                    watch.tick(now)
                except Exception:
                    log.exception("watching a download failed")
            time.sleep(TICK_SECONDS)


_WATCHDOG = _Watchdog()
