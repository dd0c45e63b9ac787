"""Stream one remote file to a spooled temporary file, hashing as it arrives."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from imageimport import metrics
from imageimport.errors import FileTooLarge, NotAnImage
from imageimport.pipeline.imaging import SNIFF_BYTES, sniff
from imageimport.sources.base import RemoteFile, Source

# Small files stay in memory; anything larger rolls over to disk.
SPOOL_BYTES = 8 * 1024 * 1024
HEARTBEAT_SECONDS = 5.0


@dataclass
class Download:
    file: IO[bytes]
    size: int
    sha256: str
    format: str


def _too_large(limit: int) -> FileTooLarge:
    return FileTooLarge(
        f"File too large: more than {limit / 1024 / 1024:.1f} MiB (MAX_FILE_SIZE_BYTES)."
    )


def download(
    source: Source,
    remote: RemoteFile,
    max_bytes: int,
    heartbeat: Callable[[], None] | None = None,
) -> Download:
    """The file's bytes, sha256 and announced format. Stops reading as soon as the content
    is known not to be an image or passes `max_bytes`, so neither costs a full download."""
    if remote.size is not None and remote.size > max_bytes:
        raise _too_large(max_bytes)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
    digest = hashlib.sha256()
    size = 0
    head = b""
    fmt: str | None = None
    last_beat = time.monotonic()
    try:
        with source.open(remote) as chunks:
            for chunk in chunks:
                if fmt is None:
                    head += chunk[:SNIFF_BYTES]
                    if len(head) >= SNIFF_BYTES:
                        fmt = _sniffed(head)
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                digest.update(chunk)
                spool.write(chunk)
                metrics.BYTES.inc(len(chunk))
                if heartbeat is not None and time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                    heartbeat()
                    last_beat = time.monotonic()
        if size == 0:
            raise NotAnImage("Not an image: the file is empty.")
        if fmt is None:
            fmt = _sniffed(head)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Download(spool, size, digest.hexdigest(), fmt)


def _sniffed(head: bytes) -> str:
    fmt = sniff(head)
    if fmt is None:
        raise NotAnImage("Not an image: the content is not a supported image format.")
    return fmt
