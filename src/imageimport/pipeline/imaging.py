"""Deciding what is an image, by content, and reading what we keep about it."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from imageimport.errors import CorruptImage, ImageTooLarge, ItemError, NotAnImage
from imageimport.pipeline.decode_budget import DecodeBudget
from imageimport.pipeline.image_headers import (
    HEADER_BYTES,
    check_headers,
    jpeg_first_scan_is_partial,
)

# Leading bytes of the formats we import. Checked before Pillow sees a byte, so a text
# file named .jpg never reaches a decoder, and a download can stop after its first chunk.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (8, b"WEBP", "WEBP"),  # after "RIFF" + 4 size bytes
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"),
)
SNIFF_BYTES = 16


class ImageFormat(StrEnum):
    """The formats imported, by Pillow's names (as stored in images.format)."""

    JPEG = "JPEG"
    PNG = "PNG"
    GIF = "GIF"
    TIFF = "TIFF"
    BMP = "BMP"
    WEBP = "WEBP"
    AVIF = "AVIF"


EXTENSIONS: dict[str, str] = {
    ImageFormat.JPEG: "jpg",
    ImageFormat.PNG: "png",
    ImageFormat.GIF: "gif",
    ImageFormat.TIFF: "tif",
    ImageFormat.BMP: "bmp",
    ImageFormat.WEBP: "webp",
    ImageFormat.AVIF: "avif",
}
THUMBNAIL_FORMAT = "WEBP"
MiB = 1024 * 1024
# Converted and reduced at a time by _thumbnail (as RGB(A), 4 bytes a pixel).
_BAND_BYTES = 4 * MiB
# Beyond what decode_cost counts: Python objects, codec state, allocator slack.
_OVERHEAD_BYTES = 16 * MiB
# EXIF larger than this is not read (a JPEG's is at most 64 kB): Pillow unpacks every array
# in it into Python numbers, 18 times the bytes or more.
_MAX_EXIF_BYTES = 256 * 1024
THUMBNAIL_CONTENT_TYPE = "image/webp"

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132
_MAKE = 0x010F
_MODEL = 0x0110
_ORIENTATION = 0x0112
# What ImageOps.exif_transpose does for each EXIF orientation.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageHeader:
    """What an image's headers tell, read without decoding its pixels."""

    format: str
    content_type: str
    extension: str
    width: int
    height: int
    taken_at: datetime | None
    camera: str | None


@dataclass(frozen=True)
class ImageInfo(ImageHeader):
    """What a full decode adds: the pixels were all there, and its thumbnail."""

    thumbnail: bytes


def sniff(head: bytes) -> str | None:
    """The image format the first bytes announce, None if they announce none we import."""
    for offset, magic, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and head[:4] != b"RIFF":
                continue
            return fmt
    return None


def inspect(
    file: BinaryIO,
    max_pixels: int,
    thumbnail_size: int,
    budget: DecodeBudget | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> ImageInfo:
    """Fully decode (at reduced scale where possible) so truncated or corrupt files are
    caught here, read EXIF, and render a thumbnail.

    Memory is reserved from `budget` first, in two steps: opening (headers; the whole file
    for WebP and AVIF), then, once the header tells how large the decode is (`decode_cost`),
    the decode itself, for which the image is opened again. Nothing is held while waiting
    for the second reservation."""
    announced = _announced(file)
    with _pillow_errors():
        fmt, width, height, cost = _measure(
            file, announced, max_pixels, thumbnail_size, budget, heartbeat
        )
        with (
            _reserved(budget, cost, f"its {width}x{height} pixels", heartbeat),
            _open(file) as image,
        ):
            _draft(image, thumbnail_size)
            image.load()  # first: a PNG's EXIF may follow its pixels
            exif = _read_exif(image)
            taken_at, camera = _exif(exif)
            thumbnail = _thumbnail(image, thumbnail_size, exif.get(_ORIENTATION))
    return ImageInfo(**_header(fmt, width, height, taken_at, camera).__dict__, thumbnail=thumbnail)


def read_header(
    file: BinaryIO,
    max_pixels: int,
    thumbnail_size: int,
    budget: DecodeBudget | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> ImageHeader:
    """What the headers tell (lean mode): the same checks as `inspect` before it decodes —
    the format by content, the headers' size, the pixel limit, and that decoding it later
    fits in `budget` — but no pixel is decoded, so damaged pixel data is not caught here.
    EXIF that a PNG keeps after its pixels is not read."""
    announced = _announced(file)
    with _pillow_errors(), _headers(file, announced, max_pixels, budget, heartbeat) as image:
        width, height = image.size
        fmt = image.format or "UNKNOWN"
        taken_at, camera = _exif(_read_exif(image, headers_only=True))
        _draft(image, thumbnail_size)
        cost = decode_cost(image, file, (width, height), thumbnail_size)
    _check_fits(budget, cost, f"its {width}x{height} pixels")
    return _header(fmt, width, height, taken_at, camera)


def _announced(file: BinaryIO) -> str:
    file.seek(0)
    announced = sniff(file.read(SNIFF_BYTES))
    if announced is None:
        raise NotAnImage("Not an image: the content is not a supported image format.")
    return announced


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Pillow's errors as the item's: a corrupt file, or one that is not an image."""
    try:
        yield
    except ItemError:
        raise
    except Image.DecompressionBombError as error:
        raise CorruptImage(f"Image too large to decode safely: {error}") from error
    except UnidentifiedImageError as error:
        raise NotAnImage("Not an image: no decoder recognises the content.") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        # Pillow reports damaged data through all of these.
        raise CorruptImage(f"Corrupt or truncated image: {error}") from error


def _header(
    fmt: str, width: int, height: int, taken_at: datetime | None, camera: str | None
) -> ImageHeader:
    if fmt not in EXTENSIONS:
        raise NotAnImage(f"Not a supported image format ({fmt}).")
    return ImageHeader(
        format=fmt,
        content_type=Image.MIME.get(fmt, "application/octet-stream"),
        extension=EXTENSIONS[fmt],
        width=width,
        height=height,
        taken_at=taken_at,
        camera=camera,
    )


def _measure(
    file: BinaryIO,
    announced: str,
    max_pixels: int,
    thumbnail_size: int,
    budget: DecodeBudget | None,
    heartbeat: Callable[[], None] | None,
) -> tuple[str, int, int, int]:
    """The format, size and decode cost the header announces. Everything opened here is gone
    when it returns."""
    with _headers(file, announced, max_pixels, budget, heartbeat) as image:
        width, height = image.size
        _draft(image, thumbnail_size)
        cost = decode_cost(image, file, (width, height), thumbnail_size)
        return image.format or "UNKNOWN", width, height, cost


@contextmanager
def _headers(
    file: BinaryIO,
    announced: str,
    max_pixels: int,
    budget: DecodeBudget | None,
    heartbeat: Callable[[], None] | None,
) -> Iterator[Image.Image]:
    """The image opened (its headers read, no pixel decoded) under a reservation of what
    opening holds, once its headers and its pixel count are found within the limits."""
    file_size = file.seek(0, io.SEEK_END)
    check_headers(file, announced)
    opening = _open_cost(announced, file_size)
    with (
        _reserved(budget, opening, f"a {file_size:,}-byte {announced} file", heartbeat),
        _open(file) as image,
    ):
        width, height = image.size
        if width * height > max_pixels:
            raise CorruptImage(
                f"Image too large to decode safely: {width}x{height} pixels is more than "
                f"the limit of {max_pixels:,} (MAX_IMAGE_PIXELS)."
            )
        yield image


def _open(file: BinaryIO) -> Image.Image:
    file.seek(0)
    with warnings.catch_warnings():
        # The pixel limit is checked against our own setting.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(file, formats=list(EXTENSIONS))


def _open_cost(fmt: str, file_size: int) -> int:
    """What Image.open holds: the headers it parses (bounded by check_headers), and for WebP
    and AVIF the whole file, which the plugin reads, the decoder copies, and the metadata
    chunks (EXIF, XMP, ICC) are copied out of once more."""
    return HEADER_BYTES + (_whole_file_copies(fmt) * file_size)


def _whole_file_copies(fmt: str | None) -> int:
    return 3 if fmt in ("WEBP", "AVIF") else 0


def _reserved(
    budget: DecodeBudget | None,
    cost: int,
    what: str,
    heartbeat: Callable[[], None] | None,
) -> AbstractContextManager[None]:
    if budget is None:
        return nullcontext()
    _check_fits(budget, cost, what)
    return budget.reserve(cost, heartbeat)


def _check_fits(budget: DecodeBudget | None, cost: int, what: str) -> None:
    if budget is not None and cost > budget.capacity:
        raise ImageTooLarge(
            f"Image too large to decode within the memory budget: decoding {what} takes up "
            f"to {cost / MiB:,.0f} MiB, more than the {budget.capacity / MiB:,.0f} MiB of "
            "DECODE_MEMORY_BYTES."
        )


def _draft(image: Image.Image, size: int) -> None:
    # draft() lets the JPEG decoder scale by 1/2..1/8 while decoding: much less work than a
    # full decode. It keeps both sides at least as large as asked, so it is asked for the box
    # the thumbnail fills (400x300 for a 4:3 photo): a square would stop it at full scale.
    width, height = image.size
    scale = min(1.0, size / width, size / height)
    image.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))


def _thumbnail(image: Image.Image, size: int, orientation: object = None) -> bytes:
    image.load()
    plan = _ThumbnailPlan.of(image, size)
    # What Image.thumbnail(reducing_gap=1) does (an integer box reduction, then bicubic on
    # what is left; alpha premultiplied for both), but converted and reduced a band of rows
    # at a time: the full-size image is never copied. Pillow's own way holds a converted
    # (RGB/RGBA) and a premultiplied copy of the whole image beside the decoded one: 8 to
    # 12 bytes a pixel instead of 1 to 4.
    if plan.band_rows >= image.height:
        # One band (most photos): the image itself, not a copy of it pasted into another.
        reduced = _reduced_band(image, plan)
    else:
        reduced = Image.new(plan.working_mode, plan.reduced_size)
        for top in range(0, image.height, plan.band_rows):
            band = image.crop((0, top, image.width, min(image.height, top + plan.band_rows)))
            reduced.paste(_reduced_band(band, plan), (0, top // plan.factors[1]))
    thumb = reduced
    if plan.final_size != reduced.size:
        # Bicubic (Pillow's default for thumbnails; Lanczos cost half as much again for no
        # visible gain at this size) on what the reduction left.
        box = (0, 0, image.width / plan.factors[0], image.height / plan.factors[1])
        thumb = reduced.resize(plan.final_size, Image.Resampling.BICUBIC, box=box)
    if thumb.mode != plan.mode:
        thumb = thumb.convert(plan.mode)
    # Rotated once small (the box is square, so the size comes out the same).
    if orientation in _TRANSPOSE:
        thumb = thumb.transpose(_TRANSPOSE[orientation])
    out = io.BytesIO()
    # method 0, the fastest: a third less time than method 2 at the same quality (PSNR);
    # photos' thumbnails come out about 10 % larger (see bench/RESULTS.md).
    thumb.save(out, THUMBNAIL_FORMAT, quality=80, method=0)
    return out.getvalue()


def _reduced_band(band: Image.Image, plan: _ThumbnailPlan) -> Image.Image:
    """Rows of the image in the working mode, reduced by the plan's integer factors."""
    if band.mode != plan.mode:
        band = band.convert(plan.mode)
    if band.mode != plan.working_mode:
        band = band.convert(plan.working_mode)
    if plan.factors != (1, 1):
        band = band.reduce(plan.factors)
    return band


@dataclass(frozen=True)
class _ThumbnailPlan:
    """How `_thumbnail` shrinks an image: the sizes and modes it goes through."""

    mode: str  # the thumbnail's: RGB, or RGBA when the image has transparency
    working_mode: str  # resampled in: RGBa (premultiplied alpha, as Pillow does) for RGBA
    factors: tuple[int, int]  # of the integer box reduction
    reduced_size: tuple[int, int]
    final_size: tuple[int, int]
    band_rows: int  # rows converted and reduced at a time: a multiple of factors[1]

    @staticmethod
    def of(image: Image.Image, size: int) -> _ThumbnailPlan:
        width, height = image.size
        if image.mode in ("RGB", "RGBA"):
            mode = image.mode
        else:
            alpha = "A" in image.getbands() or "transparency" in image.info
            mode = "RGBA" if alpha else "RGB"
        final = _fit(width, height, size)
        factors = (1, 1)
        if final != (width, height):
            # Image.resize's reducing_gap=1: reduce by as much as leaves at least the final size.
            factors = (max(1, width // final[0]), max(1, height // final[1]))
        reduced = (-(-width // factors[0]), -(-height // factors[1]))
        rows = max(1, _BAND_BYTES // (width * 4) // factors[1]) * factors[1]
        working = "RGBa" if mode == "RGBA" and final != (width, height) else mode
        return _ThumbnailPlan(mode, working, factors, reduced, final, rows)


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    """The size Image.thumbnail((size, size)) gives: within the box, the aspect kept."""
    if size >= width and size >= height:
        return width, height
    aspect = width / height

    def nearest(number: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if aspect <= 1:
        return nearest(size * aspect, lambda n: abs(aspect - n / size)), size
    return size, nearest(size / aspect, lambda n: 0 if n == 0 else abs(aspect - size / n))


def decode_cost(image: Image.Image, file: BinaryIO, full_size: tuple[int, int], size: int) -> int:
    """An upper bound of the memory that opening `image` again and `_thumbnail(image, size)`
    hold at once: the headers, the decoded pixels in Pillow's layout, what the format's
    decoder holds beside them, and the thumbnail's bands and steps. `image` is opened and
    drafted, not loaded; `full_size` is its size before the draft. bench/decode_memory.py
    checks it against the real peaks of the worst cases of every format (see SECURITY.md)."""
    width, height = image.size
    plan = _ThumbnailPlan.of(image, size)
    decoded = width * height * _bytes_per_pixel(image.mode)
    # A band: cropped, converted to RGB(A), premultiplied (the last two 4 bytes a pixel).
    band = plan.band_rows * width * (_bytes_per_pixel(image.mode) + 8)
    reduced = plan.reduced_size[0] * plan.reduced_size[1] * 4
    # Resized, converted back, rotated, encoded: a few copies of the thumbnail.
    final = plan.final_size[0] * plan.final_size[1] * 4 * 4
    return (
        HEADER_BYTES  # opened again for the decode
        + decoded
        + _decoder_cost(image, file, full_size)
        + band
        + reduced
        + final
        + _OVERHEAD_BYTES
    )


def _bytes_per_pixel(mode: str) -> int:
    # Pillow's in-memory layout: 1 byte for 1, L and P (1 is not packed); 2 for the 16-bit
    # modes; 4 for everything else, RGB included (stored as RGBX).
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _decoder_cost(image: Image.Image, file: BinaryIO, full_size: tuple[int, int]) -> int:
    """What the format's decoder holds beside the decoded pixels, by how each decoder works
    (the rest, a few rows and the codec's state, is in _OVERHEAD_BYTES)."""
    pixels = image.width * image.height
    file_size = _size_of(file)
    if image.format == "JPEG":
        return _jpeg_coefficients(image, file, full_size)
    if image.format == "TIFF" and _tag_int(getattr(image, "tag_v2", {}), 259, 1) != 1:
        # Compressed: libtiff reads the file through its descriptor (mapped: it counts as
        # resident), and decodes one strip or tile at a time into a buffer of that size.
        # (Uncompressed files are read by Pillow itself, 64 kB at a time.)
        return file_size + _tiff_block_bytes(image)
    if image.format in ("WEBP", "AVIF"):
        # The file, as when opening (_open_cost); the decoder keeps its own RGBA canvases of
        # the whole image (libwebp's animation decoder: the frame and the previous one) and
        # hands Pillow a copy: 12 bytes a pixel beside Pillow's 4.
        return _whole_file_copies(image.format) * file_size + pixels * 12
    if image.format == "BMP" and image.info.get("compression") in (1, 2):
        # Run-length BMPs are decoded in Python: the pixels gathered in a bytearray (with
        # its slack), then copied to bytes.
        return pixels * 3
    # PNG, GIF, other BMPs: rows and the decompressor's window.
    return 0


def _size_of(file: BinaryIO) -> int:
    position = file.tell()
    try:
        return file.seek(0, io.SEEK_END)
    finally:
        file.seek(position)


def _jpeg_coefficients(image: Image.Image, file: BinaryIO, full_size: tuple[int, int]) -> int:
    """libjpeg's buffers: for a progressive JPEG, or one whose first scan does not carry
    every component, every DCT coefficient of the whole image (64 per 8x8 block, 2 bytes
    each, at full resolution whatever the draft scale: 2 to 8 bytes a pixel), sized as
    libjpeg sizes it from the components' sampling factors; for the others, a few rows."""
    width, height = full_size
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 4
    rows = width * 16 * 2 * len(layers)
    if "progressive" not in image.info and not jpeg_first_scan_is_partial(file, len(layers)):
        return rows
    most_h = max(1, *(layer[1] for layer in layers))
    most_v = max(1, *(layer[2] for layer in layers))
    total = rows
    for _, h, v, _ in layers:
        h, v = max(h, 1), max(v, 1)
        across = -(-width * h // (most_h * 8))
        down = -(-height * v // (most_v * 8))
        total += -(-across // h) * h * -(-down // v) * v * 128
    return total


def _tiff_block_bytes(image: Image.Image) -> int:
    """The bytes of one strip or tile as decoded: a hostile file can make that the whole
    image, or more with tiles larger than the image. YCbCr files go through libtiff's RGBA
    path, which needs an RGBA buffer of the block besides."""
    tags = getattr(image, "tag_v2", {})
    width, height = image.size
    if 322 in tags or 323 in tags:
        pixels = _tag_int(tags, 322, width) * _tag_int(tags, 323, height)
    else:
        pixels = min(_tag_int(tags, 278, height), height) * width
    stored = _tag_int(tags, 277, 1) * -(-_tag_int(tags, 258, 8) // 8)
    return pixels * (stored + (4 if _tag_int(tags, 262, 2) == 6 else 0))


def _tag_int(tags: Mapping[int, object], tag: int, default: int) -> int:
    """A TIFF tag as one positive number (the largest, for a list such as BitsPerSample)."""
    value = tags.get(tag, default)
    values = value if isinstance(value, tuple) else (value,)
    try:
        return max(1, *(int(v) for v in values))
    except (TypeError, ValueError):
        return default


def _read_exif(image: Image.Image, headers_only: bool = False) -> Image.Exif:
    """The image's EXIF; empty when it is unreadable, or too large to read safely.
    `headers_only`: what the headers hold, without the format's own getexif (PNG's loads the
    pixels to look for EXIF after them)."""
    blob = image.info.get("exif")
    if isinstance(blob, bytes) and len(blob) > _MAX_EXIF_BYTES:
        return Image.Exif()
    try:
        return Image.Image.getexif(image) if headers_only else image.getexif()
    except Exception:
        return Image.Exif()


def _exif(exif: Image.Exif) -> tuple[datetime | None, str | None]:
    try:
        taken = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        make = _text(exif.get(_MAKE))
        model = _text(exif.get(_MODEL))
    except Exception:
        return None, None
    camera = (
        model
        if make and model and model.startswith(make)
        else " ".join(p for p in (make, model) if p)
    )
    return _exif_datetime(taken), (camera[:255] or None)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()
    return cleaned or None


def _exif_datetime(value: object) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        # EXIF times carry no zone; stored as UTC so comparisons are consistent.
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
