"""The most memory a process that imports files holds, whatever the files contain.

    baseline + DECODE_MEMORY_BYTES + CONCURRENCY x per-file buffers
        + ZIP_MAX_OPEN_ARCHIVES x an open Dropbox ZIP archive

Each part is bounded by construction (SECURITY.md, "Memory", says how), and the sum is what
the chart's worker limit must cover. tests/security/test_memory_bounds.py holds real imports
of hostile folders under it.
"""

from __future__ import annotations

from imageimport.pipeline.download import SPOOL_BYTES
from imageimport.settings import Settings

MiB = 1024 * 1024
# The interpreter, libraries, database and queue clients, the API: measured at 92 MB for
# `imageimport import`, 126 MB for `serve` and 140 MB for `worker` (PostgreSQL, NATS, S3),
# each after importing 200 small files.
BASELINE_BYTES = 192 * MiB
# S3 uploads of larger files go in parts, of which this many are in memory at once
# (storage.s3: max_in_memory_upload_chunks); smaller ones in one request.
_UPLOAD_PARTS_IN_MEMORY = 4
_UPLOAD_PART_BYTES = 8 * MiB
# Per file beyond its spooled bytes and upload buffers: HTTP chunks, copies on the way to
# the hash and the store, allocator slack. Measured: 47 MB a file in all (spool and upload
# buffers included) for a worker uploading eight 40-55 MB files to S3 at once.
_FILE_SLACK_BYTES = 24 * MiB


# An open Dropbox ZIP archive (sources/dropbox/zip.py) keeps an index of its files: a 16-byte
# digest of each id in a dict, and 36 bytes of where the file is; names are never kept.
# Measured with tracemalloc, indexing and listing 20,000 to 200,000 files: 146-175 bytes a
# file kept, at most 238 while built and listed (every path twice, just after the dict grew).
_ZIP_INDEX_BYTES_PER_ENTRY = 320
# Beside the index: walks of the central directory, one record at a time (at most 3 x 64 kB
# read, and the name's copies as it is cleaned), with their read buffer, for the archive's
# indexing and a listing of it.
_ZIP_WALK_BYTES = 2 * MiB


def zip_archive_bytes(settings: Settings) -> int:
    """What one open Dropbox ZIP archive holds, whatever the archive contains: at most
    ZIP_MAX_ENTRIES files are indexed."""
    return settings.zip_max_entries * _ZIP_INDEX_BYTES_PER_ENTRY + _ZIP_WALK_BYTES


def per_file_bytes(settings: Settings) -> int:
    """What one file in hand holds besides its decode: the part of the download kept in
    memory, and the upload's buffers."""
    upload = max(
        _UPLOAD_PARTS_IN_MEMORY * _UPLOAD_PART_BYTES, settings.s3_multipart_threshold_bytes
    )
    return SPOOL_BYTES + upload + _FILE_SLACK_BYTES


def memory_bound(settings: Settings, concurrency: int | None = None) -> int:
    """The bound for a process working on `concurrency` files at once (CONCURRENCY unless
    given, as `worker --concurrency` does)."""
    files = settings.concurrency if concurrency is None else concurrency
    archives = settings.zip_max_open_archives * zip_archive_bytes(settings)
    return (
        BASELINE_BYTES + settings.decode_memory_bytes + files * per_file_bytes(settings) + archives
    )
