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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from typing_extensions import Buffer

# The records read here, as APPNOTE.TXT (PKWARE's ZIP specification, 6.3.x) lays them out;
# every number is little-endian.
# 4.3.12, a central directory file header: signature, versions made by and needed, flags,
# method, time, date, CRC-32, compressed size, size, lengths of name, extra field and
# comment, start disk, internal and external attributes, the local header's offset.
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
# 4.3.7, a local file header: signature, version needed, flags, method, time, date, CRC-32,
# compressed size, size, lengths of name and extra field.
_LOCAL = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
# 4.3.16, the end of central directory record: signature, this disk, the directory's start
# disk, entries on this disk, entries in all, the directory's size and offset, the length of
# the comment that follows (at most 65,535 bytes, and the last thing in the file).
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_END_SEARCHED = _END.size + 0xFFFF  # so the record is within the file's last 65,557 bytes
# 4.3.15, the zip64 end of central directory locator, right before the end record:
# signature, the disk of the zip64 end record, that record's offset, how many disks.
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
# 4.3.14, the zip64 end of central directory record, without its extensible data sector:
# signature, size of the rest, versions made by and needed, this disk, the directory's start
# disk, entries on this disk, entries in all, the directory's size and offset.
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
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
    """The end record's account of the central directory, the zip64 one's where there is
    one; None when the file has no end record (none, or one cut short, in its last 65,557
    bytes). Raises zipfile.BadZipFile for an archive zipfile refuses too (on several disks)
    and for a zip64 end record that cannot be where its locator says."""
    end = _end_record(file)
    if end is None:
        return None
    at, announced, size, offset = end
    shift = at - size - offset
    zip64 = _zip64_end_record(file, at)
    if zip64 is not None:
        announced, size, offset = zip64
        shift = at - _ZIP64_LOCATOR.size - _ZIP64_END.size - size - offset
    return Directory(offset + shift, size, announced, shift)


def _end_record(file: BinaryIO) -> tuple[int, int, int, int] | None:
    """Where the end record starts, and the entries in all, size and offset of the central
    directory it gives. Found as zipfile finds it: the file's last 22 bytes when the archive
    has no comment, else the last signature among the last 65,557 bytes (so a comment that
    holds the signature is taken for the record, as in zipfile)."""
    file_size = file.seek(0, io.SEEK_END)
    if file_size < _END.size:
        return None
    file.seek(file_size - _END.size)
    record = file.read(_END.size)
    at = file_size - _END.size
    if not (record.startswith(_END_SIGNATURE) and record.endswith(b"\0\0")):
        start = max(file_size - _END_SEARCHED, 0)
        file.seek(start)
        tail = file.read(file_size - start)
        found = tail.rfind(_END_SIGNATURE)
        if found < 0 or len(tail) - found < _END.size:
            return None
        at, record = start + found, tail[found : found + _END.size]
    _, _, _, _, entries, size, offset, _ = _END.unpack(record)
    return at, entries, size, offset


def _zip64_end_record(file: BinaryIO, end_at: int) -> tuple[int, int, int] | None:
    """(entries, size, offset) of the central directory from the zip64 end record, when a
    locator precedes the end record at `end_at`. As zipfile does, the record is read right
    before the locator (the position `Directory.shift` assumes), not at the offset the
    locator gives: that offset leaves out any bytes before the archive. None without a
    locator, or without a record there (the classic end record then counts)."""
    locator_at = end_at - _ZIP64_LOCATOR.size
    if locator_at < 0:
        return None
    file.seek(locator_at)
    signature, disk, _, disks = _ZIP64_LOCATOR.unpack(file.read(_ZIP64_LOCATOR.size))
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        return None
    if disk != 0 or disks > 1:
        raise zipfile.BadZipFile("zipfiles that span multiple disks are not supported")
    record_at = locator_at - _ZIP64_END.size
    if record_at < 0:
        raise zipfile.BadZipFile("Truncated zip64 end of central directory record")
    file.seek(record_at)
    fields = _ZIP64_END.unpack(file.read(_ZIP64_END.size))
    if fields[0] != _ZIP64_END_SIGNATURE:
        return None
    return fields[7], fields[8], fields[9]


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
    modified: datetime | None  # None when the entry's MS-DOS date is not a real date


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
        if fields[0] != _CENTRAL_SIGNATURE:
            raise zipfile.BadZipFile("Bad magic number for central directory")
        (flags, method, dos_time, dos_date, crc, compress_size, file_size) = fields[3:10]
        name_length, extra_length, comment_length = fields[10:13]
        header_offset = fields[16]
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
        yield Record(name.partition("\0")[0], location, _dos_moment(dos_date, dos_time))


def _dos_moment(date: int, time: int) -> datetime | None:
    """An entry's MS-DOS date and time (4.4.6), read as zipfile reads them. They carry no
    time zone: taken as UTC, they are only ever compared with the same entry's in a later
    download."""
    try:
        return datetime(
            (date >> 9) + 1980,
            (date >> 5) & 0xF,
            date & 0x1F,
            time >> 11,
            (time >> 5) & 0x3F,
            (time & 0x1F) * 2,
            tzinfo=UTC,
        )
    except ValueError:  # month 0, hour 31...: a time no zipper wrote
        return None


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
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

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._left)
        if wanted <= 0:
            return 0
        data = self._file.read(wanted)
        view[: len(data)] = data
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
        if fields[0] != _LOCAL_SIGNATURE:
            raise zipfile.BadZipFile("Bad magic number for file header")
        name_length, extra_length = fields[9:11]
        raw_name = file.read(name_length)
        if zlib.crc32(raw_name) != location.name_crc:
            raise zipfile.BadZipFile("File name in directory and header differ")
        file.seek(extra_length, io.SEEK_CUR)
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
