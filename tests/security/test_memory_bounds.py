"""A process importing a hostile folder stays under the memory bound its settings promise
(imageimport.pipeline.memory: baseline + DECODE_MEMORY_BYTES + CONCURRENCY x per-file
buffers + ZIP_MAX_OPEN_ARCHIVES x an open ZIP's index), measured from the kernel's peak
(VmHWM) of a real `imageimport import`."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imageimport.db.models import Import, ImportItem
from imageimport.pipeline.memory import memory_bound
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from tests.commands import Measured, run_measured
from tests.fakes.folder import FakeFile, FakeFolder
from tests.security.conftest import serve_route
from tests.security.hostile import MiB, image, png_chunk, zip_bomb

ARCHIVE = FakeFolder("Archive", [FakeFile("placeholder.txt", b"x")])


def _import(url: str, route_env: dict[str, str], tmp: Path, **settings: Any) -> Measured:
    """`imageimport import URL` in a process of its own, with only the given settings."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= route_env | {"DATA_DIR": str(tmp / "data")}
    env |= {name.upper(): str(value) for name, value in settings.items()}
    return run_measured("import", url, env=env, cwd=tmp, timeout=600)


def _items(tmp: Path) -> dict[str, ImportItem]:
    runtime = Runtime(Settings(_env_file=None, data_dir=tmp / "data"))  # type: ignore[call-arg]
    try:
        with runtime.session() as session:
            return {item.name: item for item in session.scalars(select(ImportItem))}
    finally:
        runtime.close()


def _imports(tmp: Path) -> list[Import]:
    runtime = Runtime(Settings(_env_file=None, data_dir=tmp / "data"))  # type: ignore[call-arg]
    try:
        with runtime.session() as session:
            return list(session.scalars(select(Import)))
    finally:
        runtime.close()


def _bound(tmp: Path, **settings: Any) -> int:
    return memory_bound(Settings(_env_file=None, data_dir=tmp, **settings))  # type: ignore[call-arg]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")]
)
def test_a_zip_entry_that_lies_about_its_size_is_never_unpacked(
    tmp_path: Path, method: int, name: str
) -> None:
    """Row 2 of issue 14: an entry declaring 1,000 bytes that unpacks to 400 MiB in one call of
    its decompressor (bzip2, LZMA). The headers pass every check; only never inflating such an
    entry keeps the process under its bound (main peaked at ~900 MB for both)."""
    raw = zip_bomb(method, 400 * MiB, others={"Archive/good.jpg": image(0)})
    assert len(raw) < 64 * 1024
    settings = {"concurrency": 2, "decode_memory_bytes": 64 * MiB}
    with serve_route("dropbox-zip", ARCHIVE, raw_zips={ARCHIVE.id: raw}) as route:
        done = _import(route.url, route.env, tmp_path, **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    bound = _bound(tmp_path, **settings)
    assert done.peak_rss_bytes < bound, (done.peak_rss_bytes // MiB, bound // MiB)
    items = _items(tmp_path)
    assert items["good.jpg"].state == "done"
    bomb = items["bomb.png"]
    assert bomb.state == "failed"
    assert f"compressed with {name} inside the folder's ZIP download" in (bomb.reason or "")


def _rgba_png(side: int, label: int) -> bytes:
    """A legitimate `side` x `side` RGBA PNG, written row by row without ever holding the
    image: flat colour bands, so it deflates to a few hundred kB. `label` goes into a text
    chunk, making each file distinct (no duplicate is skipped before decoding)."""
    packer = zlib.compressobj(9)
    rows = [b"\0" + bytes((band * 50, 90, 255 - band * 50, 200 + band)) * side for band in range(5)]
    data = b"".join(packer.compress(rows[y * 5 // side]) for y in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"tEXt", b"Comment\0copy %d" % label)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.timeout(900)
def test_a_folder_of_the_largest_allowed_images_imports_within_the_bound(
    tmp_path: Path,
) -> None:
    """Row 3 of issue 14: CONCURRENCY 10,000 x 10,000 RGBA PNGs (just at MAX_IMAGE_PIXELS, a
    few hundred kB each), imported with the default settings. Pillow's own thumbnail needs
    ~850 MB for each, all eight at once (main peaked above 6 GB). Now each is decoded into
    400 MB, reduced a band at a time, and only as many at once as DECODE_MEMORY_BYTES holds."""
    defaults = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    side = 10_000
    assert side * side <= defaults.max_image_pixels
    first = _rgba_png(side, 0)
    assert len(first) < MiB
    files = [FakeFile(f"huge-{n}.png", _rgba_png(side, n), "image/png") for n in range(8)]
    assert len(files) == defaults.concurrency
    with serve_route("gdrive-api", FakeFolder("Huge", files)) as route:
        done = _import(route.url, route.env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    bound = memory_bound(defaults)
    assert done.peak_rss_bytes < bound, (done.peak_rss_bytes // MiB, bound // MiB)
    items = _items(tmp_path)
    assert {name: item.state for name, item in items.items()} == {f.name: "done" for f in files}


def _tiff_of_strips(count: int) -> bytes:
    """A 1 x `count` grey TIFF in `count` one-row strips, all past the end of the file (so a
    decoder that gets that far fails at once): 8 bytes of header a strip, ~300 of memory."""
    entries = [(256, 4, 1, 1), (257, 4, 1, count), (258, 3, 1, 8), (259, 3, 1, 1)]
    entries += [(262, 3, 1, 1), (273, 4, count, 0), (277, 3, 1, 1), (278, 4, 1, 1)]
    entries += [(279, 4, count, 0)]
    ifd_size = 2 + 12 * len(entries) + 4
    offsets_at = 8 + ifd_size
    counts_at = offsets_at + 4 * count
    end = counts_at + 4 * count
    ifd = struct.pack("<H", len(entries))
    for tag, kind, number, value in entries:
        value = {273: offsets_at, 279: counts_at}.get(tag, value)
        ifd += struct.pack("<HHII", tag, kind, number, value)
    return (
        b"II*\0"
        + struct.pack("<I", 8)
        + ifd
        + bytes(4)
        + struct.pack("<I", end + 4096) * count
        + struct.pack("<I", 1) * count
    )


def _gif_of_comment_blocks(count: int) -> bytes:
    """A GIF whose comment comes in `count` blocks of one byte: Pillow keeps each apart."""
    base = image(3, "GIF")
    table = 3 << ((base[10] & 7) + 1) if base[10] & 0x80 else 0
    return base[: 13 + table] + b"!\xfe" + b"\x01x" * count + b"\x00" + base[13 + table :]


def _jpeg_of_segments(count: int) -> bytes:
    """A JPEG with `count` empty comment segments before its frame: Pillow keeps a list entry
    for each."""
    base = image(4)
    return base[:2] + b"\xff\xfe\x00\x02" * count + base[2:]


@pytest.mark.timeout(600)
def test_headers_that_cost_far_more_to_parse_than_their_size_are_refused_unparsed(
    tmp_path: Path,
) -> None:
    """Beyond the issue's rows: Pillow keeps what it parses of a header piece by piece, in
    Python objects. A 12 MB TIFF of 1.5 million strips, a 12 MB GIF comment in one-byte
    blocks and 16 MB of empty JPEG segments cost ~450, ~500 and ~290 MB to open (main peaked
    at 1.2 GB with the three side by side). Their headers are walked first and refused."""
    files = [
        FakeFile("strips.tif", _tiff_of_strips(1_500_000), "image/tiff"),
        FakeFile("comment.gif", _gif_of_comment_blocks(6_000_000), "image/gif"),
        FakeFile("segments.jpg", _jpeg_of_segments(4_000_000), "image/jpeg"),
        FakeFile("fine.jpg", image(5), "image/jpeg"),
    ]
    settings = {"concurrency": 3, "decode_memory_bytes": 64 * MiB}
    with serve_route("gdrive-api", FakeFolder("Headers", files)) as route:
        done = _import(route.url, route.env, tmp_path, **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    bound = _bound(tmp_path, **settings)
    assert done.peak_rss_bytes < bound, (done.peak_rss_bytes // MiB, bound // MiB)
    items = _items(tmp_path)
    assert items["fine.jpg"].state == "done"
    for name in ("strips.tif", "comment.gif", "segments.jpg"):
        assert items[name].state == "failed", (name, items[name].reason)
        assert "Image headers too large to read safely" in (items[name].reason or "")


_LOCAL = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # zipfile.structCentralDir
_END = struct.Struct("<4s4H2LH")  # zipfile.structEndArchive
_UTF8 = 0x800
_JAN_1_1980 = 0x21
MAX_NAME_BYTES = 0xFFFF  # a name's length is a 16-bit field


def _write_stored_zip(target: Path, entries: Callable[[], Iterator[tuple[bytes, bytes]]]) -> int:
    """A ZIP of the stored entries `entries()` yields (name, data), laid out as any archiver
    does, written a record at a time (so the test never holds the archive); returns the size
    of its central directory. `entries()` is called twice and must yield the same both times."""
    offsets, crcs = array("Q"), array("L")
    with target.open("wb") as out:
        for name, data in entries():
            crc = zlib.crc32(data)
            offsets.append(out.tell())
            crcs.append(crc)
            sizes = (crc, len(data), len(data), len(name), 0)
            out.write(_LOCAL.pack(b"PK\x03\x04", 20, 0, _UTF8, 0, 0, _JAN_1_1980, *sizes))
            out.write(name + data)
        start = out.tell()
        for number, (name, data) in enumerate(entries()):
            sizes = (crcs[number], len(data), len(data), len(name), 0, 0)
            header = (b"PK\x01\x02", 20, 3, 20, 0, _UTF8, 0, 0, _JAN_1_1980, *sizes)
            out.write(_CENTRAL.pack(*header, 0, 0, 0, offsets[number]))
            out.write(name)
        size = out.tell() - start
        count = len(offsets)
        out.write(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
    return size


def _long_names(count: int, photo: bytes) -> Callable[[], Iterator[tuple[bytes, bytes]]]:
    """A photo, then `count` empty files whose names are as long as a ZIP allows (64 kB): what
    costs the most memory per byte of central directory once it is parsed."""

    def entries() -> Iterator[tuple[bytes, bytes]]:
        yield b"Archive/photo.jpg", photo
        for number in range(count):
            stem = b"Archive/%06d-" % number
            yield stem + b"n" * (MAX_NAME_BYTES - len(stem)), b""

    return entries


def _record_bytes(name_bytes: int) -> int:
    return _CENTRAL.size + name_bytes


# One file at a time and a small decode budget, so that the bound is mostly the baseline; and
# an entry count (10,000) that these archives are within, for what the open archive's index
# may hold.
_ZIP_SETTINGS = {"concurrency": 1, "decode_memory_bytes": 64 * MiB, "zip_max_entries": 10_000}


@pytest.mark.timeout(900)
def test_a_zip_whose_central_directory_is_too_large_is_refused_unread(tmp_path: Path) -> None:
    """An archive whose central directory (its table of contents) is 1.5 times
    ZIP_MAX_INDEX_BYTES, in 64 kB names of empty files: zipfile would read all of it into
    memory and keep each name, the source more copies of each (main peaked at 679 MiB). The
    end record gives its size: the archive is refused before it is read."""
    defaults = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    limit = defaults.zip_max_index_bytes
    count = limit * 3 // 2 // _record_bytes(MAX_NAME_BYTES)
    archive = tmp_path / "hostile.zip"
    size = _write_stored_zip(archive, _long_names(count, image(0)))
    settings = _ZIP_SETTINGS
    assert size > limit and count + 1 <= settings["zip_max_entries"]
    with serve_route("dropbox-zip", ARCHIVE, raw_zips={ARCHIVE.id: archive}) as route:
        done = _import(route.url, route.env, tmp_path, **settings)
    bound = _bound(tmp_path, **settings)
    assert done.peak_rss_bytes < bound, (done.peak_rss_bytes // MiB, bound // MiB)
    (record,) = _imports(tmp_path)
    assert record.state == "failed", (record.state, done.stderr[-3000:])
    assert "ZIP_MAX_INDEX_BYTES" in (record.error or ""), record.error
    assert f"{size:,} bytes" in (record.error or ""), record.error
    assert _items(tmp_path) == {}


@pytest.mark.timeout(900)
def test_a_zip_just_within_its_limits_imports_within_the_bound(tmp_path: Path) -> None:
    """The largest central directory ZIP_MAX_INDEX_BYTES allows, all in names as long as a
    ZIP allows: it is read a record at a time, and each file costs the open archive a few
    dozen bytes whatever its name (main peaked at 485 MiB)."""
    defaults = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    limit = defaults.zip_max_index_bytes
    photo = image(0)
    count = (limit - _record_bytes(len(b"Archive/photo.jpg"))) // _record_bytes(MAX_NAME_BYTES)
    archive = tmp_path / "largest.zip"
    size = _write_stored_zip(archive, _long_names(count, photo))
    settings = _ZIP_SETTINGS
    assert limit - _record_bytes(MAX_NAME_BYTES) < size <= limit
    assert count + 1 <= settings["zip_max_entries"]
    with serve_route("dropbox-zip", ARCHIVE, raw_zips={ARCHIVE.id: archive}) as route:
        done = _import(route.url, route.env, tmp_path, **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    bound = _bound(tmp_path, **settings)
    assert done.peak_rss_bytes < bound, (done.peak_rss_bytes // MiB, bound // MiB)
    (record,) = _imports(tmp_path)
    assert record.state == "succeeded", (record.state, record.error)
    items = _items(tmp_path)
    assert len(items) == count + 1
    assert items.pop("photo.jpg").state == "done"
    assert {item.state for item in items.values()} == {"skipped"}
