"""What parsing an image's headers may cost, checked by walking them before Pillow does.

Pillow keeps what it parses from a header, and pays for each piece in Python objects: every
JPEG marker segment, every PNG chunk it does not know, each GIF comment block, a TIFF
directory's arrays unpacked into numbers and one tile description per strip (about 300
bytes a strip: a 76 MB TIFF of ten million one-row strips took 3 GB to open). These walks
read only lengths and counts, keep nothing, and refuse headers beyond what real images
have, so that opening an image holds at most about HEADER_BYTES whatever the file says.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from imageimport.errors import CorruptImage

MiB = 1024 * 1024
# Header bytes Pillow may parse and keep: metadata, ICC profiles, comments, TIFF tag data.
MAX_HEADER_BYTES = 8 * MiB
# Pieces it may keep them in: segments, chunks, comment blocks, strips or tiles, TIFF
# directory entries and array values each cost up to a few hundred bytes of objects.
MAX_HEADER_PIECES = 65_536
# What opening an image holds at most, with both limits met (measured well under it).
HEADER_BYTES = 32 * MiB

# TIFF field types: size of one value, and whether Pillow unpacks it into a Python number
# (BYTE, ASCII and UNDEFINED stay bytes or text).
_TIFF_TYPES = {
    1: (1, False),
    2: (1, False),
    3: (2, True),
    4: (4, True),
    5: (8, True),
    6: (1, True),
    7: (1, False),
    8: (2, True),
    9: (4, True),
    10: (8, True),
    11: (4, True),
    12: (8, True),
    13: (4, True),
}
_EXIF_IFD = 0x8769


class _Tally:
    def __init__(self, what: str) -> None:
        self.what = what
        self.bytes = 0
        self.pieces = 0

    def add(self, nbytes: int, pieces: int = 1) -> None:
        self.bytes += nbytes
        self.pieces += pieces
        if self.bytes > MAX_HEADER_BYTES or self.pieces > MAX_HEADER_PIECES:
            raise CorruptImage(
                f"Image headers too large to read safely: the {self.what} hold more than "
                f"{MAX_HEADER_PIECES:,} pieces or {MAX_HEADER_BYTES // MiB} MiB of metadata."
            )


def check_headers(file: BinaryIO, fmt: str) -> None:
    """Raise CorruptImage when the headers of `file` (sniffed as `fmt`) exceed the limits.
    Truncated or malformed headers pass: Pillow reports those better."""
    position = file.tell()
    try:
        walk = {"JPEG": _jpeg, "PNG": _png, "GIF": _gif, "TIFF": _tiff}.get(fmt)
        if walk is not None:
            file.seek(0)
            walk(file)
    except (struct.error, ValueError, OSError):
        pass
    finally:
        file.seek(position)


def jpeg_first_scan_is_partial(file: BinaryIO, components: int) -> bool:
    """Whether the first scan (SOS) of a JPEG names fewer components than its frame: then
    libjpeg buffers the whole image, as it does for a progressive file. True when unsure."""
    position = file.tell()
    try:
        count = _jpeg(file)
    except (struct.error, ValueError, OSError):
        return True
    finally:
        file.seek(position)
    return count is None or count < components


def _jpeg(file: BinaryIO) -> int | None:
    """Walks the marker segments up to the first scan, whose component count it returns."""
    tally = _Tally("JPEG marker segments")
    file.seek(2)  # past SOI
    while True:
        if file.read(1) != b"\xff":
            return None
        marker = file.read(1)
        while marker == b"\xff":  # fill bytes
            marker = file.read(1)
        if not marker:
            return None
        if marker[0] == 0xD9:  # EOI before any scan
            return None
        if marker[0] == 0x01 or 0xD0 <= marker[0] <= 0xD8:  # no length field
            continue
        (length,) = struct.unpack(">H", _exactly(file, 2))
        tally.add(length)
        if marker[0] == 0xDA:
            return _exactly(file, 1)[0]
        file.seek(length - 2, io.SEEK_CUR)


def _png(file: BinaryIO) -> None:
    """Walks every chunk: Pillow reads the ones after the pixels too, on load."""
    tally = _Tally("PNG chunks")
    file.seek(8)
    while True:
        head = file.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            return
        if kind not in (b"IDAT", b"fdAT"):  # pixels: streamed, never kept
            tally.add(length)
        file.seek(length + 4, io.SEEK_CUR)  # data and CRC


def _gif(file: BinaryIO) -> None:
    """Walks the blocks before the first image (comments and extensions Pillow reads)."""
    tally = _Tally("GIF extension blocks")
    header = _exactly(file, 13)
    flags = header[10]
    if flags & 0x80:  # global colour table
        file.seek(3 << ((flags & 7) + 1), io.SEEK_CUR)
    while True:
        introducer = file.read(1)
        if introducer != b"!":  # an image (","), the trailer, or the end
            return
        file.read(1)  # label
        while True:
            size = file.read(1)
            if not size or size[0] == 0:
                break
            tally.add(size[0])
            file.seek(size[0], io.SEEK_CUR)


def _tiff(file: BinaryIO) -> None:
    """Walks the first directory and its Exif directory: entries, array values, strips."""
    order = "<" if _exactly(file, 2) == b"II" else ">"
    file.seek(4)
    (offset,) = struct.unpack(order + "I", _exactly(file, 4))
    tally = _Tally("TIFF directories")
    exif = _tiff_directory(file, order, offset, tally)
    if exif:
        _tiff_directory(file, order, exif, tally)


def _tiff_directory(file: BinaryIO, order: str, offset: int, tally: _Tally) -> int | None:
    """Counts one directory into `tally`; returns the offset of its Exif directory, if any."""
    file.seek(offset)
    (entries,) = struct.unpack(order + "H", _exactly(file, 2))
    tally.add(entries * 12, entries)
    exif = None
    for _ in range(entries):
        tag, kind, count, value = struct.unpack(order + "HHII", _exactly(file, 12))
        size, unpacked = _TIFF_TYPES.get(kind, (0, False))
        tally.add(size * count, count if unpacked else 0)
        if tag == _EXIF_IFD and count == 1 and kind in (4, 13):
            exif = value
    return exif


def _exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) < size:
        raise ValueError("truncated")
    return data
