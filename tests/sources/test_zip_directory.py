"""Finding a ZIP's central directory from its end records (APPNOTE.TXT 4.3.14-4.3.16), checked
against what zipfile itself reads from the same archives."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from imageimport.sources.dropbox.zip_directory import Directory, find_directory, records

END_SIGNATURE = b"PK\x05\x06"


def make_zip(count: int, *, comment: bytes = b"", before: bytes = b"") -> bytes:
    out = io.BytesIO(before)
    out.seek(len(before))
    with zipfile.ZipFile(out, "a" if before else "w", zipfile.ZIP_STORED) as archive:
        for number in range(count):
            archive.writestr(f"Top/{number}.txt", str(number).encode())
        archive.comment = comment
    return out.getvalue()


def directory_of(data: bytes, tmp_path: Path) -> Directory | None:
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    with path.open("rb", buffering=0) as raw:  # as the ZIP route reads it
        return find_directory(raw)


def names(data: bytes, directory: Directory) -> list[str]:
    return [record.name for record in records(io.BytesIO(data), directory)]


def assert_as_zipfile_reads(data: bytes, directory: Directory | None) -> None:
    """The same entries, at the same offsets, as zipfile finds."""
    assert directory is not None
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    assert directory.announced == len(infos)
    listed = list(records(io.BytesIO(data), directory))
    assert [record.name for record in listed] == [info.filename for info in infos]
    assert [record.location.header_offset for record in listed] == [
        info.header_offset for info in infos
    ]


def test_a_plain_archive(tmp_path: Path) -> None:
    data = make_zip(3)
    directory = directory_of(data, tmp_path)
    assert directory is not None
    assert (directory.announced, directory.shift) == (3, 0)
    assert directory.start == data.rfind(END_SIGNATURE) - directory.size
    assert_as_zipfile_reads(data, directory)


@pytest.mark.parametrize("comment", [b"made by a test", b"PK" * 100, b"c" * 0xFFFF])
def test_an_archive_with_a_comment(tmp_path: Path, comment: bytes) -> None:
    """The end record is searched for back from the end, over a comment of any length up to
    the largest (65,535 bytes)."""
    data = make_zip(2, comment=comment)
    assert data.endswith(comment)
    assert_as_zipfile_reads(data, directory_of(data, tmp_path))


def test_an_archive_after_other_bytes(tmp_path: Path) -> None:
    """Bytes before the archive (a self-extractor's stub) shift every offset, as in zipfile."""
    stub = b"#!/bin/sh\n" * 10
    data = stub + make_zip(2)
    directory = directory_of(data, tmp_path)
    assert directory is not None
    assert directory.shift == len(stub)
    assert_as_zipfile_reads(data, directory)


ZIP64_COUNT = 0xFFFF + 1  # one entry more than the classic end record can count


@pytest.fixture(scope="module")
def zip64_archive() -> bytes:
    """More than 65,535 entries, as zipfile writes them: the classic end record says 0xFFFF
    and defers to the zip64 end record, which its locator points to."""
    data = make_zip(ZIP64_COUNT, comment=b"zip64")
    end = data.rfind(END_SIGNATURE)
    assert struct.unpack_from("<H", data, end + 10)[0] == 0xFFFF
    assert data[end - 20 : end - 16] == b"PK\x06\x07"
    assert data[end - 76 : end - 72] == b"PK\x06\x06"
    return data


def test_a_zip64_archive(tmp_path: Path, zip64_archive: bytes) -> None:
    directory = directory_of(zip64_archive, tmp_path)
    assert directory is not None
    assert (directory.announced, directory.shift) == (ZIP64_COUNT, 0)
    listed = names(zip64_archive, directory)
    assert len(listed) == ZIP64_COUNT
    assert listed[-1] == f"Top/{ZIP64_COUNT - 1}.txt"


def test_a_zip64_archive_after_other_bytes(tmp_path: Path, zip64_archive: bytes) -> None:
    stub = b"stub" * 25
    data = stub + zip64_archive
    directory = directory_of(data, tmp_path)
    assert directory is not None
    assert (directory.announced, directory.shift) == (ZIP64_COUNT, len(stub))
    first = next(records(io.BytesIO(data), directory))
    assert (first.name, first.location.header_offset) == ("Top/0.txt", len(stub))


def test_an_archive_on_several_disks_is_refused_as_zipfile_refuses_it(
    tmp_path: Path, zip64_archive: bytes
) -> None:
    data = bytearray(zip64_archive)
    locator = data.rfind(b"PK\x06\x07")
    struct.pack_into("<L", data, locator + 16, 2)  # the total number of disks
    with pytest.raises(zipfile.BadZipFile, match="span multiple disks"):
        directory_of(bytes(data), tmp_path)
    with pytest.raises(zipfile.BadZipFile, match="span multiple disks"):
        zipfile.ZipFile(io.BytesIO(data))


@pytest.mark.parametrize("cut", [1, 10, 21, 22, 30])
def test_a_truncated_end_record_is_no_end_record(tmp_path: Path, cut: int) -> None:
    """Cut anywhere in its last 22 bytes (or just before), an archive has no end record left;
    zipfile says it is not a zip file."""
    data = make_zip(3)[:-cut]
    assert directory_of(data, tmp_path) is None
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(data))


def test_a_garbage_tail_is_no_end_record(tmp_path: Path) -> None:
    """The end overwritten with other bytes, or longer garbage after the archive than a
    comment can be: the end record is searched for in the last 65,557 bytes only."""
    data = make_zip(3)
    assert directory_of(data[:-22] + b"\xff" * 22, tmp_path) is None
    assert directory_of(data + b"\x00" * 0xFFFF, tmp_path) is not None  # as a comment might
    assert directory_of(data + b"\x00" * (0xFFFF + 1), tmp_path) is None
    assert directory_of(b"PK\x03\x04" + b"garbage" * 100, tmp_path) is None
    assert directory_of(b"", tmp_path) is None


def test_a_zip64_locator_without_room_for_its_record_is_damaged(tmp_path: Path) -> None:
    data = b"PK\x06\x07" + bytes(16) + END_SIGNATURE + bytes(18)
    with pytest.raises(zipfile.BadZipFile, match="zip64 end of central directory record"):
        directory_of(data, tmp_path)


def test_each_entry_has_the_modification_time_zipfile_reads(tmp_path: Path) -> None:
    stamps = [(2024, 5, 1, 12, 0, 0), (1999, 12, 31, 23, 59, 58), (2107, 12, 31, 23, 59, 58)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for number, stamp in enumerate(stamps):
            archive.writestr(zipfile.ZipInfo(f"Top/{number}.txt", stamp), b"x")
    data = bytearray(out.getvalue())
    # A date no zipper writes (month 0) in the last entry's central record: no time at all.
    last = data.rfind(b"PK\x01\x02")
    data[last + 14 : last + 16] = struct.pack("<H", (2024 - 1980) << 9 | 1)
    directory = directory_of(bytes(data), tmp_path)
    assert directory is not None
    moments = [record.modified for record in records(io.BytesIO(bytes(data)), directory)]
    assert [m.timetuple()[:6] if m else None for m in moments[:2]] == stamps[:2]
    assert all(m is None or m.utcoffset() is not None for m in moments)
    assert moments[2] is None
