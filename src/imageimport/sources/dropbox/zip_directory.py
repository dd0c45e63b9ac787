"""A ZIP archive from strangers, read without holding its table of contents: the central
directory is walked a record at a time straight from the file, an index keeps the few numbers
that opening an entry takes, and an entry is opened from those alone.

zipfile reads the whole central directory into memory at once and keeps a ZipInfo for every
entry: measured with tracemalloc, about 400 bytes an entry plus its name, and twice the
directory's size while it reads. A name may be 64 kB, so a directory of a few hundred MB (a
few thousand such names) costs a worker that much again. Here a walk holds one record (at
most 3 x 64 kB) and the index 36 bytes an entry plus its key's digest, whatever the names.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CENTRAL = struct.Struct(zipfile.structCentralDir)
_LOCAL = struct.Struct(zipfile.structFileHeader)
_ZIP64_EXTRA = 0x0001
_UTF8_NAME = 0x800
# Flags zipfile itself refuses to read: compressed patched data, strong encryption.
_UNREADABLE_FLAGS = 0x20 | 0x40
_READ_BUFFER = 256 * 1024
# Where each entry is, packed: header offset, compressed size, size, CRC-32, CRC-32 of the
# raw name (checked against the entry's own header), method, flags.
_LOCATION = struct.Struct("<QQQIIHH")


@dataclass(frozen=True)
class Directory:
    """Where the central directory is, as the end record (zip64 included) says."""

    start: int  # its first byte in the file (negative when the end record is wrong)
    size: int
    announced: int  # the entries the end record counts
    shift: int  # bytes found before the archive, added to every offset (as zipfile does)


def find_directory(file: BinaryIO) -> Directory | None:
    """The end record's account of the central directory; None when there is none.
    Raises zipfile.BadZipFile for one zipfile would refuse too (archives on several disks)."""
    end = zipfile._EndRecData(file)  # type: ignore[attr-defined]
    if end is None:
        return None
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    offset = end[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    shift = end[zipfile._ECD_LOCATION] - size - offset  # type: ignore[attr-defined]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        shift -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    announced = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    return Directory(offset + shift, size, announced, shift)


@dataclass(frozen=True)
class Location:
    """What opening one entry takes."""

    header_offset: int
    compress_size: int
    file_size: int
    crc: int
    name_crc: int
    compress_type: int
    flag_bits: int


@dataclass(frozen=True)
class Record:
    """One entry of the central directory: its name as zipfile gives it (decoded, ended at
    the first NUL) and where it is."""

    name: str
    location: Location


def records(file: BinaryIO, directory: Directory) -> Iterator[Record]:
    """Every record of the central directory, in order, read from `file` as they come.
    Raises zipfile.BadZipFile where zipfile would (a truncated or garbled directory) and
    UnicodeDecodeError for a name flagged UTF-8 that is not."""
    if directory.start < 0:
        raise zipfile.BadZipFile("Bad offset for central directory")
    file.seek(directory.start)
    reader = io.BufferedReader(_Window(file, directory.size), _READ_BUFFER)
    left = directory.size
    while left > 0:
        fixed = reader.read(_CENTRAL.size)
        if len(fixed) != _CENTRAL.size:
            raise zipfile.BadZipFile("Truncated central directory")
        fields = _CENTRAL.unpack(fixed)
        if fields[zipfile._CD_SIGNATURE] != zipfile.stringCentralDir:  # type: ignore[attr-defined]
            raise zipfile.BadZipFile("Bad magic number for central directory")
        (flags, method, _, _, crc, compress_size, file_size) = fields[5:12]
        name_length, extra_length, comment_length = fields[12:15]
        header_offset = fields[zipfile._CD_LOCAL_HEADER_OFFSET]  # type: ignore[attr-defined]
        raw_name = _read_exactly(reader, name_length)
        extra = _read_exactly(reader, extra_length)
        _read_exactly(reader, comment_length)  # never kept
        left -= _CENTRAL.size + name_length + extra_length + comment_length
        file_size, compress_size, header_offset = _zip64_sizes(
            extra, file_size, compress_size, header_offset
        )
        name = raw_name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
        location = Location(
            header_offset + directory.shift,
            compress_size,
            file_size,
            crc,
            zlib.crc32(raw_name),
            method,
            flags,
        )
        yield Record(name.partition("\0")[0], location)


def _read_exactly(reader: io.BufferedReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise zipfile.BadZipFile("Truncated central directory")
    return data


def _zip64_sizes(extra: bytes, file_size: int, compress_size: int, offset: int) -> tuple[int, ...]:
    """The 64-bit values a zip64 extra field gives for those at 0xFFFFFFFF, as zipfile reads
    them."""
    while len(extra) >= 4:
        kind, length = struct.unpack("<HH", extra[:4])
        if length + 4 > len(extra):
            raise zipfile.BadZipFile(f"Corrupt extra field {kind:04x} (size={length})")
        if kind == _ZIP64_EXTRA:
            data = extra[4 : length + 4]
            try:
                if file_size == 0xFFFF_FFFF:
                    (file_size,), data = struct.unpack("<Q", data[:8]), data[8:]
                if compress_size == 0xFFFF_FFFF:
                    (compress_size,), data = struct.unpack("<Q", data[:8]), data[8:]
                if offset == 0xFFFF_FFFF:
                    (offset,) = struct.unpack("<Q", data[:8])
            except struct.error:
                raise zipfile.BadZipFile("Corrupt zip64 extra field") from None
        extra = extra[length + 4 :]
    return file_size, compress_size, offset


class _Window(io.RawIOBase):
    """The next `size` bytes of a file, and nothing past them."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._left)
        if wanted <= 0:
            return 0
        data = self._file.read(wanted)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


class Index:
    """Where each entry is, found by a key (a string the caller chooses): a 16-byte digest of
    the key and 36 bytes of location an entry, however long keys and names are."""

    def __init__(self) -> None:
        self._ordinals: dict[bytes, int] = {}
        self._locations = bytearray()

    def __len__(self) -> int:
        return len(self._ordinals)

    def add(self, key: str, location: Location) -> bool:
        """Index the entry under `key`; False (and nothing indexed) when the key is taken."""
        digest = _digest(key)
        if digest in self._ordinals:
            return False
        self._ordinals[digest] = len(self._ordinals)
        self._locations += _LOCATION.pack(
            location.header_offset,
            location.compress_size,
            location.file_size,
            location.crc,
            location.name_crc,
            location.compress_type,
            location.flag_bits,
        )
        return True

    def ordinal(self, key: str) -> int | None:
        """The entry's position among those indexed (in the order they were added)."""
        return self._ordinals.get(_digest(key))

    def find(self, key: str) -> Location | None:
        ordinal = self.ordinal(key)
        if ordinal is None:
            return None
        return Location(*_LOCATION.unpack_from(self._locations, ordinal * _LOCATION.size))


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def open_entry(path: Path, location: Location, name: str) -> zipfile.ZipExtFile:
    """The entry's bytes, read and inflated by zipfile (CRC checked at the end) from a file
    handle of its own; the caller closes it. Raises zipfile.BadZipFile when the entry's own
    header does not match its record, NotImplementedError for flags zipfile cannot read."""
    if location.flag_bits & _UNREADABLE_FLAGS:
        raise NotImplementedError("compressed patched data or strong encryption")
    file = path.open("rb")
    try:
        file.seek(location.header_offset)
        header = file.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            raise zipfile.BadZipFile("Truncated file header")
        fields = _LOCAL.unpack(header)
        if fields[zipfile._FH_SIGNATURE] != zipfile.stringFileHeader:  # type: ignore[attr-defined]
            raise zipfile.BadZipFile("Bad magic number for file header")
        raw_name = file.read(fields[zipfile._FH_FILENAME_LENGTH])  # type: ignore[attr-defined]
        if zlib.crc32(raw_name) != location.name_crc:
            raise zipfile.BadZipFile("File name in directory and header differ")
        file.seek(fields[zipfile._FH_EXTRA_FIELD_LENGTH], io.SEEK_CUR)  # type: ignore[attr-defined]
        # Only what ZipExtFile reads of an entry.
        info = zipfile.ZipInfo(name)
        info.compress_type = location.compress_type
        info.compress_size = location.compress_size
        info.file_size = location.file_size
        info.CRC = location.crc
        info.flag_bits = location.flag_bits
        return zipfile.ZipExtFile(file, "r", info, None, close_fileobj=True)
    except BaseException:
        file.close()
        raise
