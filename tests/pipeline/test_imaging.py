import io
import struct
import zlib
from datetime import UTC, datetime

import pytest
from PIL import Image

from imageimport.errors import CorruptImage, ImageTooLarge, NotAnImage
from imageimport.pipeline import imaging
from imageimport.pipeline.decode_budget import DecodeBudget
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


# -- the decode budget --------------------------------------------------------------------------


def test_an_image_whose_decode_exceeds_the_whole_budget_fails_naming_the_setting() -> None:
    data = make_image(3000, 2000, "PNG")
    budget = DecodeBudget(32 * 1024 * 1024)  # 3000x2000 RGB takes 24 MB, plus the overheads
    with pytest.raises(ImageTooLarge, match="more than the 32 MiB of DECODE_MEMORY_BYTES"):
        inspect(io.BytesIO(data), LIMIT, 400, budget)
    assert inspect(io.BytesIO(data), LIMIT, 400, DecodeBudget(128 * 1024 * 1024)).width == 3000


def _textured(mode: str, width: int, height: int) -> Image.Image:
    gray = Image.effect_noise((width, height), 80).convert("L")
    rgb = Image.merge(
        "RGB",
        [gray, gray.rotate(90, expand=False), gray.transpose(Image.Transpose.FLIP_TOP_BOTTOM)],
    )
    alpha = Image.new("L", (width, height), 0)
    alpha.paste(255, (width // 3, height // 3, width, height))
    alpha.paste(128, (0, 0, width // 5, height))
    if mode == "RGBA":
        return Image.merge("RGBA", [*rgb.split(), alpha])
    if mode == "LA":
        return Image.merge("LA", [gray, alpha])
    if mode in ("P", "P+transparency"):
        palette = rgb.quantize(64)
        if mode == "P+transparency":
            palette.info["transparency"] = 3
        return palette
    return {"RGB": rgb, "L": gray, "1": gray.convert("1"), "CMYK": rgb.convert("CMYK")}[mode]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "P+transparency", "1", "CMYK"])
@pytest.mark.parametrize(
    "size", [(1601, 1201), (1001, 1501), (3000, 37), (37, 3000), (401, 399), (400, 300)]
)
def test_thumbnails_match_pillows_own_pixel_for_pixel(mode: str, size: tuple[int, int]) -> None:
    """_thumbnail converts and reduces a band of rows at a time: the result must be what
    Image.thumbnail (reducing_gap=1) makes of the whole image at once."""
    image = _textured(mode, *size)
    expected = image.convert(
        "RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"
    )
    expected.thumbnail((400, 400), Image.Resampling.BICUBIC, reducing_gap=1.0)
    out = io.BytesIO()
    image.save(out, "TIFF" if mode == "CMYK" else "PNG")  # PNG holds no CMYK
    opened = Image.open(out)
    captured: list[Image.Image] = []
    real_save = Image.Image.save

    def capture(self: Image.Image, *args: object, **kwargs: object) -> None:
        captured.append(self.copy())
        real_save(self, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image.Image, "save", capture)
        imaging._thumbnail(opened, 400)
    (made,) = captured
    assert (made.mode, made.size) == (expected.mode, expected.size)
    assert made.tobytes() == expected.tobytes()
