import io
import struct
import zlib
from datetime import UTC, datetime

import pytest
from PIL import Image

from imageimport.errors import CorruptImage, NotAnImage
from imageimport.pipeline.imaging import inspect, sniff
from tests.fakes.folder import TAKEN_AT, make_image

LIMIT = 50_000_000


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("WEBP", "WEBP"),
        ("GIF", "GIF"),
        ("TIFF", "TIFF"),
        ("BMP", "BMP"),
    ],
)
def test_sniff_recognises_real_images(fmt: str, expected: str) -> None:
    assert sniff(make_image(8, 8, fmt)[:16]) == expected


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world, not an image", b"<html><body>", b"RIFF\0\0\0\0WAVEfmt ", b"%PDF-1.7"],
)
def test_sniff_rejects_non_images(head: bytes) -> None:
    assert sniff(head) is None


def test_inspect_reads_dimensions_exif_and_makes_a_thumbnail() -> None:
    data = make_image(
        1200,
        800,
        "JPEG",
        exif={0x010F: "Canon", 0x0110: "Canon EOS R5", 0x9003: "2021:07:14 09:30:05"},
    )
    info = inspect(io.BytesIO(data), LIMIT, 400)
    assert (info.width, info.height, info.format) == (1200, 800, "JPEG")
    assert info.content_type == "image/jpeg"
    assert info.extension == "jpg"
    assert info.taken_at == TAKEN_AT.replace(tzinfo=UTC)
    assert info.camera == "Canon EOS R5"  # the make is not repeated
    thumb = Image.open(io.BytesIO(info.thumbnail))
    assert thumb.format == "WEBP"
    assert max(thumb.size) == 400
    assert thumb.size == (400, 267)


def test_inspect_joins_make_and_model() -> None:
    data = make_image(40, 30, "JPEG", exif={0x010F: "NIKON", 0x0110: "D750"})
    assert inspect(io.BytesIO(data), LIMIT, 64).camera == "NIKON D750"


def test_exif_orientation_is_applied_to_the_thumbnail() -> None:
    data = make_image(200, 100, "JPEG", exif={0x0112: 6})  # rotate 90° clockwise
    info = inspect(io.BytesIO(data), LIMIT, 100)
    assert (info.width, info.height) == (200, 100)  # the stored original is untouched
    assert Image.open(io.BytesIO(info.thumbnail)).size == (50, 100)


def test_truncated_jpeg_is_corrupt() -> None:
    data = make_image(640, 480, "JPEG", seed=1)
    with pytest.raises(CorruptImage, match="Corrupt or truncated"):
        inspect(io.BytesIO(data[: len(data) // 3]), LIMIT, 400)


def test_text_named_like_an_image_is_not_an_image() -> None:
    with pytest.raises(NotAnImage):
        inspect(io.BytesIO(b"<html>not a picture</html>"), LIMIT, 400)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions but carries almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(CorruptImage, match="too large to decode safely"):
        inspect(io.BytesIO(_png_header_only(20_000, 20_000)), LIMIT, 400)


def test_animated_gif_keeps_its_first_frame_as_thumbnail() -> None:
    frames = [Image.new("RGB", (60, 40), color) for color in ("red", "blue", "green")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = inspect(io.BytesIO(out.getvalue()), LIMIT, 32)
    assert (info.width, info.height, info.format) == (60, 40, "GIF")


def test_timestamps_are_stored_as_utc() -> None:
    data = make_image(10, 10, "JPEG", exif={0x0132: "2020:01:02 03:04:05"})
    assert inspect(io.BytesIO(data), LIMIT, 10).taken_at == datetime(
        2020, 1, 2, 3, 4, 5, tzinfo=UTC
    )


def test_our_pixel_limit_applies_below_pillows_own() -> None:
    with pytest.raises(CorruptImage, match="more than the limit of 1,000,000"):
        inspect(io.BytesIO(_png_header_only(2_000, 1_000)), 1_000_000, 400)
