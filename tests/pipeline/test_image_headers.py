"""Image headers are walked before Pillow parses them: real ones pass, ones beyond any real
image's (which Pillow would keep piece by piece in memory) are refused with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, TiffImagePlugin

from imageimport.errors import CorruptImage
from imageimport.pipeline.image_headers import (
    MAX_HEADER_BYTES,
    MAX_HEADER_PIECES,
    check_headers,
    jpeg_first_scan_is_partial,
)
from imageimport.pipeline.imaging import sniff
from tests.fakes.folder import make_image

MiB = 1024 * 1024


def _check(data: bytes) -> None:
    fmt = sniff(data[:16])
    assert fmt is not None
    check_headers(io.BytesIO(data), fmt)


def _saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _jpeg_with(segments: list[bytes]) -> bytes:
    base = make_image(32, 24, "JPEG")
    return base[:2] + b"".join(segments) + base[2:]


def _comment(payload: bytes) -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload


def _png_with(chunks: list[tuple[bytes, bytes]]) -> bytes:
    base = make_image(32, 24, "PNG")
    packed = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    return base[:33] + packed + base[33:]  # after the signature and IHDR


def _gif_with_comment(blocks: int) -> bytes:
    base = make_image(32, 24, "GIF")
    table = 3 << ((base[10] & 7) + 1) if base[10] & 0x80 else 0
    return base[: 13 + table] + b"!\xfe" + b"\x01x" * blocks + b"\x00" + base[13 + table :]


def _tiff_with_tag(tag: int, kind: int, value: object) -> bytes:
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[tag] = value
    info.tagtype[tag] = kind
    return _saved(Image.new("RGB", (16, 16)), "TIFF", tiffinfo=info)


@pytest.mark.parametrize(
    "data",
    [
        make_image(640, 480, "JPEG", exif={0x010F: "Canon", 0x9003: "2021:07:14 09:30:05"}),
        _saved(Image.new("RGB", (300, 200)), "JPEG", progressive=True, icc_profile=b"p" * 200_000),
        make_image(300, 200, "PNG"),
        _saved(Image.new("RGBA", (64, 48)), "PNG", pnginfo=None, exif=b"II*\0" + bytes(60)),
        make_image(60, 40, "GIF"),
        _saved(
            Image.new("P", (60, 40)),
            "GIF",
            save_all=True,
            append_images=[Image.new("P", (60, 40), 3)] * 20,
            comment=b"made by hand " * 100,
        ),
        _saved(
            Image.new("RGBA", (60, 40)),
            "PNG",
            save_all=True,
            append_images=[Image.new("RGBA", (60, 40))] * 20,
        ),
        make_image(300, 200, "TIFF"),
        _saved(Image.new("L", (64, 20_000)), "TIFF", strip_size=64),  # 20,000 one-row strips
        _saved(Image.new("RGB", (512, 512)), "TIFF", tile=(64, 64)),
        make_image(30, 20, "BMP"),
    ],
    ids=[
        "jpeg-exif",
        "jpeg-icc",
        "png",
        "png-exif",
        "gif",
        "gif-animated",
        "apng",
        "tiff",
        "tiff-strips",
        "tiff-tiles",
        "bmp",
    ],
)
def test_real_images_pass(data: bytes) -> None:
    _check(data)


@pytest.mark.parametrize(
    "data",
    [
        _jpeg_with([_comment(b"")] * (MAX_HEADER_PIECES + 1)),
        _jpeg_with([_comment(bytes(65_000))] * (MAX_HEADER_BYTES // 65_000 + 1)),
        _png_with([(b"prVt", b"")] * (MAX_HEADER_PIECES + 1)),
        _png_with([(b"prVt", bytes(MAX_HEADER_BYTES + 1))]),
        _png_with([(b"eXIf", bytes(MAX_HEADER_BYTES + 1))]),
        _gif_with_comment(MAX_HEADER_PIECES + 1),
        _tiff_with_tag(700, 1, bytes(MAX_HEADER_BYTES + 1)),  # XMP as BYTE
        _tiff_with_tag(0xC000, 4, tuple(range(1000, 1000 + MAX_HEADER_PIECES + 1))),
    ],
    ids=[
        "jpeg-segments",
        "jpeg-bytes",
        "png-chunks",
        "png-bytes",
        "png-exif",
        "gif-blocks",
        "tiff-bytes",
        "tiff-values",
    ],
)
def test_headers_beyond_any_real_image_are_refused(data: bytes) -> None:
    with pytest.raises(CorruptImage, match="Image headers too large to read safely"):
        _check(data)


def test_a_tiff_of_more_strips_than_pieces_allowed_is_refused() -> None:
    """Ten million one-row strips: a 76 MB file Pillow took 3 GB to open."""
    count = MAX_HEADER_PIECES // 2 + 1  # an offset and a byte count for each strip
    data = _saved(
        Image.new("L", (8, count)), "TIFF", compression="tiff_adobe_deflate", strip_size=8
    )
    with pytest.raises(CorruptImage, match="TIFF directories"):
        _check(data)


def _tiff_with_exif_array(values: int) -> bytes:
    """A 1x1 grey TIFF whose Exif directory holds an array of `values` LONG numbers."""
    ifd0_at, exif_at = 8, 8 + 2 + 10 * 12 + 4
    array_at = exif_at + 2 + 12 + 4
    pixel_at = array_at + 4 * values
    entries = [
        (256, 4, 1, 1),
        (257, 4, 1, 1),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, pixel_at),
        (277, 3, 1, 1),
        (278, 4, 1, 1),
        (279, 4, 1, 1),
        (0x8769, 4, 1, exif_at),
    ]
    ifd0 = struct.pack("<H", len(entries))
    ifd0 += b"".join(struct.pack("<HHII", *entry) for entry in entries) + bytes(4)
    exif = struct.pack("<H", 1) + struct.pack("<HHII", 0xC000, 4, values, array_at) + bytes(4)
    array = struct.pack(f"<{values}I", *range(1000, 1000 + values))
    return b"II*\0" + struct.pack("<I", ifd0_at) + ifd0 + exif + array + b"\x80"


def test_the_exif_directory_of_a_tiff_counts_too() -> None:
    assert Image.open(io.BytesIO(_tiff_with_exif_array(10))).getexif().get_ifd(0x8769)
    _check(_tiff_with_exif_array(10))
    with pytest.raises(CorruptImage, match="TIFF directories"):
        _check(_tiff_with_exif_array(MAX_HEADER_PIECES + 1))


def test_truncated_headers_are_left_to_pillow() -> None:
    for data in (make_image(64, 64, "JPEG"), make_image(64, 64, "PNG"), make_image(64, 64, "TIFF")):
        _check(data[:40])


def test_a_first_scan_without_every_component_means_the_whole_image_is_buffered() -> None:
    data = bytearray(make_image(64, 64, "JPEG"))
    assert not jpeg_first_scan_is_partial(io.BytesIO(bytes(data)), 3)
    sos = data.index(b"\xff\xda")
    data[sos + 4] = 1  # the scan's component count
    assert jpeg_first_scan_is_partial(io.BytesIO(bytes(data)), 3)
    assert jpeg_first_scan_is_partial(io.BytesIO(b"\xff\xd8\xff"), 3)  # unsure: assume so
