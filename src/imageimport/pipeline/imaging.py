"""Deciding what is an image, by content, and reading what we keep about it."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from imageimport.errors import CorruptImage, NotAnImage

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
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "TIFF": "tif",
    "BMP": "bmp",
    "WEBP": "webp",
    "AVIF": "avif",
}
THUMBNAIL_FORMAT = "WEBP"
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
class ImageInfo:
    format: str
    content_type: str
    extension: str
    width: int
    height: int
    taken_at: datetime | None
    camera: str | None
    thumbnail: bytes


def sniff(head: bytes) -> str | None:
    """The image format the first bytes announce, None if they announce none we import."""
    for offset, magic, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and head[:4] != b"RIFF":
                continue
            return fmt
    return None


def inspect(file: BinaryIO, max_pixels: int, thumbnail_size: int) -> ImageInfo:
    """Fully decode (at reduced scale where possible) so truncated or corrupt files are
    caught here, read EXIF, and render a thumbnail."""
    file.seek(0)
    if sniff(file.read(SNIFF_BYTES)) is None:
        raise NotAnImage("Not an image: the content is not a supported image format.")
    file.seek(0)
    try:
        with warnings.catch_warnings():
            # The pixel limit is checked below against our own setting.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file, formats=list(EXTENSIONS))
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise CorruptImage(
                    f"Image too large to decode safely: {width}x{height} pixels is more than "
                    f"the limit of {max_pixels:,} (MAX_IMAGE_PIXELS)."
                )
            fmt = image.format or "UNKNOWN"
            taken_at, camera = _exif(image)
            thumbnail = _thumbnail(image, thumbnail_size)
    except (NotAnImage, CorruptImage):
        raise
    except Image.DecompressionBombError as error:
        raise CorruptImage(f"Image too large to decode safely: {error}") from error
    except UnidentifiedImageError as error:
        raise NotAnImage("Not an image: no decoder recognises the content.") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        # Pillow reports damaged data through all of these.
        raise CorruptImage(f"Corrupt or truncated image: {error}") from error
    if fmt not in EXTENSIONS:
        raise NotAnImage(f"Not a supported image format ({fmt}).")
    return ImageInfo(
        format=fmt,
        content_type=Image.MIME.get(fmt, "application/octet-stream"),
        extension=EXTENSIONS[fmt],
        width=width,
        height=height,
        taken_at=taken_at,
        camera=camera,
        thumbnail=thumbnail,
    )


def _thumbnail(image: Image.Image, size: int) -> bytes:
    orientation = image.getexif().get(_ORIENTATION)
    # draft() lets the JPEG decoder scale by 1/2..1/8 while decoding: much less work than a
    # full decode. It keeps both sides at least as large as asked, so it is asked for the box
    # the thumbnail fills (400x300 for a 4:3 photo): a square would stop it at full scale.
    width, height = image.size
    scale = min(1.0, size / width, size / height)
    image.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
    image.load()
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert(
            "RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"
        )
    # A fast integer box reduction first (reducing_gap=1), then bicubic (Pillow's default
    # for thumbnails; Lanczos cost half as much again for no visible gain at this size).
    image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=1.0)
    # Rotated once small (the box is square, so the size comes out the same).
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    out = io.BytesIO()
    # method 2 rather than the default 4: half the encoding time for a few more bytes.
    image.save(out, THUMBNAIL_FORMAT, quality=80, method=2)
    return out.getvalue()


def _exif(image: Image.Image) -> tuple[datetime | None, str | None]:
    try:
        exif = image.getexif()
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
