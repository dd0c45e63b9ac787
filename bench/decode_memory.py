"""How much memory decoding the worst images to a thumbnail really takes, against the estimate
the decode budget reserves for them (DECODE_MEMORY_BYTES; see imageimport.pipeline.imaging).

    python -m bench.decode_memory [--side 10000] [--only png-rgba jpeg-cmyk ...] [--keep DIR]

Each case is written once (in --keep, or a temporary folder), then inspected by
`imaging.inspect` in a fresh process, which reports how far its resident memory rose above
where it stood just before (VmHWM, reset through /proc/self/clear_refs). The codec is warmed
up on a tiny image first so that loading its library is not counted. A case whose peak
exceeds its estimate is a bug in the estimate: the command exits 1. Findings are summarised
in SECURITY.md ("Memory").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

MiB = 1024 * 1024

# Runs in a fresh process: argv = path, warm-up format, warm-up mode.
_CHILD = """
import io, json, sys
from PIL import Image
from imageimport.pipeline import imaging
from imageimport.pipeline.decode_budget import DecodeBudget

class Recording(DecodeBudget):
    reserved = 0
    def reserve(self, nbytes, heartbeat=None):
        Recording.reserved = max(Recording.reserved, nbytes)
        return super().reserve(nbytes, heartbeat)

def field(name):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024

path, fmt, mode = sys.argv[1:4]
warm = io.BytesIO()
Image.new(mode, (16, 16)).save(warm, fmt)
imaging.inspect(warm, 10**12, 400, DecodeBudget(2**62))
with open(path, "rb") as file:
    budget = Recording(2**62)
    before = field("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    try:
        info = imaging.inspect(file, 10**12, 400, budget)
        outcome = f"{info.format} {info.width}x{info.height}"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"[:120]
    peak = field("VmHWM") - before
print(json.dumps({"peak": peak, "estimate": Recording.reserved, "outcome": outcome}))
"""


def _texture(mode: str, size: tuple[int, int]) -> Image.Image:
    """A few flat shapes: compresses to almost nothing, decodes to full size."""
    image = Image.new(mode, size)
    draw = ImageDraw.Draw(image)
    width, height = size
    bands = len(image.getbands())
    for n in range(6):
        value = (n * 40 + 20) % 256
        fill: int | tuple[int, ...] = value if bands == 1 else (value,) * bands
        if mode == "1":
            fill = n % 2
        if mode.startswith("I"):
            fill = value * 200
        draw.rectangle((n * width // 7, n * height // 9, width - 1, height - 1 - n), fill=fill)
    return image


def _pillow(mode: str, fmt: str, **options: object) -> Callable[[int], bytes]:
    def make(side: int) -> bytes:
        size = (side, side)
        if fmt == "WEBP":
            size = (min(side, 16383), min(side, 16383))
        out = io.BytesIO()
        _texture(mode, size).save(out, fmt, **options)
        return out.getvalue()

    return make


def _palette_png(transparent: bool) -> Callable[[int], bytes]:
    def make(side: int) -> bytes:
        image = _texture("L", (side, side)).convert("P")
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=1, **({"transparency": 0} if transparent else {}))
        return out.getvalue()

    return make


def _png_raw(bit_depth: int, colour_type: int, channels: int) -> Callable[[int], bytes]:
    """A PNG of zeros at any bit depth, written directly (Pillow cannot write 16-bit colour)."""

    def make(side: int) -> bytes:
        row = b"\0" + bytes(side * channels * bit_depth // 8)
        packer = zlib.compressobj(6)
        data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
        header = struct.pack(">IIBBBBB", side, side, bit_depth, colour_type, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b"")
        )

    return make


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _tiff_raw(
    samples: int,
    bits: int,
    photometric: int,
    *,
    tile: int | None = None,
    extra_samples: tuple[int, ...] = (),
    compression: int = 8,
) -> Callable[[int], bytes]:
    """A little-endian TIFF of zeros in one strip (or in `tile`-sided tiles), deflated."""

    def make(side: int) -> bytes:
        block_w, block_h = (tile, tile) if tile else (side, side)
        across = -(-side // block_w)
        down = -(-side // block_h)
        raw_block = block_w * block_h * samples * bits // 8
        packer = zlib.compressobj(6)
        piece = bytes(min(raw_block, MiB))
        parts, left = [], raw_block
        while left:
            parts.append(packer.compress(piece[: min(left, MiB)]))
            left -= min(left, MiB)
        block = b"".join(parts) + packer.flush()
        count = across * down
        tags: list[tuple[int, int, list[int]]] = [
            (256, 4, [side]),
            (257, 4, [side]),
            (258, 3, [bits] * samples),
            (259, 3, [compression]),
            (262, 3, [photometric]),
            (277, 3, [samples]),
            (284, 3, [1]),
        ]
        if extra_samples:
            tags.append((338, 3, list(extra_samples)))
        if tile:
            tags += [(322, 4, [tile]), (323, 4, [tile])]
            offsets_tag, counts_tag = 324, 325
        else:
            tags.append((278, 4, [side]))
            offsets_tag, counts_tag = 273, 279
        data_start = 8
        image_data = block * count
        ifd_start = data_start + len(image_data)
        tags += [(offsets_tag, 4, [data_start + n * len(block) for n in range(count)])]
        tags += [(counts_tag, 4, [len(block)] * count)]
        tags.sort()
        entries = len(tags)
        overflow_at = ifd_start + 2 + entries * 12 + 4
        ifd, overflow = b"", b""
        for tag, kind, values in tags:
            fmt = "H" if kind == 3 else "I"
            packed = struct.pack(f"<{len(values)}{fmt}", *values)
            if len(packed) <= 4:
                ifd += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
            else:
                ifd += struct.pack("<HHII", tag, kind, len(values), overflow_at + len(overflow))
                overflow += packed
        header = b"II*\0" + struct.pack("<I", ifd_start)
        return header + image_data + struct.pack("<H", entries) + ifd + b"\0\0\0\0" + overflow

    return make


def _noise_tiff(side: int) -> bytes:
    """Incompressible: the file is as large as the pixels (libtiff reads it through the fd)."""
    out = io.BytesIO()
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    image.save(out, "TIFF", compression="tiff_adobe_deflate")
    return out.getvalue()


def _padded(fmt: str) -> Callable[[int], bytes]:
    """A small image followed by as many bytes as a side x side RGB image has: the plugins
    that read the whole file hold all of it."""

    def make(side: int) -> bytes:
        out = io.BytesIO()
        _texture("RGB", (64, 64)).save(out, fmt)
        return out.getvalue() + bytes(side * side * 3)

    return make


def _bmp_rle8(side: int) -> bytes:
    """An 8-bit run-length BMP: each row one run of 255-pixel pieces, then end of line."""
    row = b"".join(bytes((min(255, side - x), 7)) for x in range(0, side, 255)) + b"\0\0"
    pixels = row * side + b"\0\1"
    palette = b"".join(bytes((n, n, n, 0)) for n in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def _animated(fmt: str, mode: str) -> Callable[[int], bytes]:
    def make(side: int) -> bytes:
        side = min(side, 16383) if fmt == "WEBP" else side
        frames = [_texture(mode, (side, side)) for _ in range(2)]
        frames[1].paste(0, (0, 0, side // 2, side // 2))
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:], lossless=True)
        return out.getvalue()

    return make


# Headers at the limits of image_headers (the pixels are small; `side` is ignored).
def _small(fmt: str, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    _texture(mode, (64, 64)).save(out, fmt)
    return out.getvalue()


def _jpeg_segments(size: int, count: int, icc: bool = False) -> Callable[[int], bytes]:
    """`count` marker segments of `size` payload bytes before the frame (ICC chunks are also
    joined into one profile by Pillow)."""

    def make(side: int) -> bytes:
        base = _small("JPEG")
        segments = []
        for n in range(count):
            if icc:
                payload = b"ICC_PROFILE\0" + bytes((n % 255 + 1, 255)) + bytes(size - 14)
                segments.append(b"\xff\xe2" + struct.pack(">H", size + 2) + payload)
            else:
                segments.append(b"\xff\xfe" + struct.pack(">H", size + 2) + bytes(size))
        return base[:2] + b"".join(segments) + base[2:]

    return make


def _png_private_chunks(size: int, count: int) -> Callable[[int], bytes]:
    def make(side: int) -> bytes:
        base = _small("PNG")
        chunks = b"".join(_chunk(b"prVt", bytes(size)) for _ in range(count))
        return base[:33] + chunks + base[33:]  # after the signature and IHDR

    return make


def _gif_comment_blocks(count: int) -> bytes:
    base = _small("GIF", "P")
    table = 3 << ((base[10] & 7) + 1) if base[10] & 0x80 else 0
    comment = b"!\xfe" + b"\x01x" * count + b"\x00"
    return base[: 13 + table] + comment + base[13 + table :]


def _tiff_strips(count: int) -> bytes:
    out = io.BytesIO()
    _texture("L", (64, count)).save(out, "TIFF", compression="tiff_adobe_deflate", strip_size=64)
    return out.getvalue()


def _tiff_bytes_tag(size: int) -> bytes:
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[700] = bytes(size)  # XMP, as BYTE
    info.tagtype[700] = 1
    out = io.BytesIO()
    _texture("RGB", (64, 64)).save(out, "TIFF", tiffinfo=info)
    return out.getvalue()


def _png_exif_array(size: int) -> bytes:
    """An eXIf chunk whose one tag is an array of SHORT numbers Pillow unpacks one by one."""
    values = size // 2 - 16
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0xC000, 3, values, 26) + b"\0\0\0\0"
    exif = b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack(f"<{values}H", *([1000] * values))
    base = _small("PNG")
    return base[:33] + _chunk(b"eXIf", exif) + base[33:]


# name: (make(side) -> bytes, warm-up format, warm-up mode)
CASES: dict[str, tuple[Callable[[int], bytes], str, str]] = {
    "png-rgba": (_pillow("RGBA", "PNG", compress_level=1), "PNG", "RGBA"),
    "png-rgb": (_pillow("RGB", "PNG", compress_level=1), "PNG", "RGB"),
    "png-p": (_palette_png(False), "PNG", "P"),
    "png-p-transparent": (_palette_png(True), "PNG", "P"),
    "png-l": (_pillow("L", "PNG", compress_level=1), "PNG", "L"),
    "png-la": (_pillow("LA", "PNG", compress_level=1), "PNG", "LA"),
    "png-1": (_pillow("1", "PNG"), "PNG", "1"),
    "png-i16": (_png_raw(16, 0, 1), "PNG", "I;16"),
    "png-rgb16": (_png_raw(16, 2, 3), "PNG", "RGB"),
    "png-rgba16": (_png_raw(16, 6, 4), "PNG", "RGBA"),
    "apng-rgba": (_animated("PNG", "RGBA"), "PNG", "RGBA"),
    "jpeg-rgb": (_pillow("RGB", "JPEG", quality=90), "JPEG", "RGB"),
    "jpeg-rgb-444-progressive": (
        _pillow("RGB", "JPEG", subsampling=0, progressive=True),
        "JPEG",
        "RGB",
    ),
    "jpeg-l-progressive": (_pillow("L", "JPEG", progressive=True), "JPEG", "L"),
    "jpeg-cmyk": (_pillow("CMYK", "JPEG"), "JPEG", "CMYK"),
    "jpeg-cmyk-progressive": (_pillow("CMYK", "JPEG", progressive=True), "JPEG", "CMYK"),
    "tiff-rgb-raw": (_pillow("RGB", "TIFF"), "TIFF", "RGB"),
    "tiff-rgb-deflate": (_pillow("RGB", "TIFF", compression="tiff_adobe_deflate"), "TIFF", "RGB"),
    "tiff-cmyk-deflate": (
        _pillow("CMYK", "TIFF", compression="tiff_adobe_deflate"),
        "TIFF",
        "CMYK",
    ),
    "tiff-rgb-jpeg": (_pillow("RGB", "TIFF", compression="jpeg"), "TIFF", "RGB"),
    "tiff-rgb-jpeg-one-strip": (
        _pillow("RGB", "TIFF", compression="jpeg", strip_size=2**40),
        "TIFF",
        "RGB",
    ),
    "tiff-rgb-deflate-noise": (_noise_tiff, "TIFF", "RGB"),
    "tiff-rgba16-strip": (_tiff_raw(4, 16, 2, extra_samples=(2,)), "TIFF", "RGBA"),
    "tiff-rgba-big-tiles": (_tiff_raw(4, 8, 2, tile=16384, extra_samples=(2,)), "TIFF", "RGBA"),
    "tiff-i16": (_tiff_raw(1, 16, 1), "TIFF", "I;16"),
    "tiff-f32": (_tiff_raw(1, 32, 1), "TIFF", "F"),
    "gif": (_pillow("P", "GIF"), "GIF", "P"),
    "gif-animated": (_animated("GIF", "P"), "GIF", "P"),
    "bmp-rgb": (_pillow("RGB", "BMP"), "BMP", "RGB"),
    "bmp-rle8": (_bmp_rle8, "BMP", "P"),
    "webp-lossless-rgba": (_pillow("RGBA", "WEBP", lossless=True, method=0), "WEBP", "RGBA"),
    "webp-lossy-rgb": (_pillow("RGB", "WEBP", quality=50, method=0), "WEBP", "RGB"),
    "webp-animated-rgba": (_animated("WEBP", "RGBA"), "WEBP", "RGBA"),
    "webp-padded": (_padded("WEBP"), "WEBP", "RGB"),
    "avif-padded": (_padded("AVIF"), "AVIF", "RGB"),
    "header-jpeg-65k-segments": (_jpeg_segments(0, 65_000), "JPEG", "RGB"),
    "header-jpeg-8mib-icc": (_jpeg_segments(65_000, 128, icc=True), "JPEG", "RGB"),
    "header-png-65k-chunks": (_png_private_chunks(0, 65_000), "PNG", "RGB"),
    "header-png-8mib-chunks": (_png_private_chunks(1_000_000, 8), "PNG", "RGB"),
    "header-png-exif-256k": (lambda side: _png_exif_array(255 * 1024), "PNG", "RGB"),
    "header-gif-65k-blocks": (lambda side: _gif_comment_blocks(65_000), "GIF", "P"),
    "header-tiff-32k-strips": (lambda side: _tiff_strips(32_000), "TIFF", "L"),
    "header-tiff-8mib-tag": (lambda side: _tiff_bytes_tag(8 * MiB - 4096), "TIFF", "RGB"),
    "avif-rgba": (_pillow("RGBA", "AVIF", speed=10, quality=30), "AVIF", "RGBA"),
}


def _generate(name: str, side: int, folder: Path) -> Path:
    path = folder / f"{name}-{side}"
    if not path.exists():
        # In a process of its own: building a 100 MP image takes as much memory as decoding it.
        code = (
            "import sys; from pathlib import Path; from bench.decode_memory import CASES;"
            "Path(sys.argv[2]).write_bytes(CASES[sys.argv[1]][0](int(sys.argv[3])))"
        )
        subprocess.run([sys.executable, "-c", code, name, str(path), str(side)], check=True)
    return path


def measure(name: str, side: int, folder: Path) -> dict[str, object]:
    path = _generate(name, side, folder)
    _, fmt, mode = CASES[name]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), fmt, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    return {"case": name, "file_bytes": path.stat().st_size, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=10_000, help="width and height")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--keep", type=Path, help="folder caching the generated files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        under = True
        print(f"{'case':28} {'file MB':>8} {'peak MB':>8} {'estimate MB':>11}  outcome")
        for name in args.only:
            row = measure(name, args.side, folder)
            peak, estimate = int(row["peak"]), int(row["estimate"])  # type: ignore[call-overload]
            flag = "" if peak <= estimate else "  <-- over the estimate"
            under = under and peak <= estimate
            print(
                f"{name:28} {int(row['file_bytes']) / MiB:8.1f} {peak / MiB:8.0f} "  # type: ignore[call-overload]
                f"{estimate / MiB:11.0f}  {row['outcome']}{flag}",
                flush=True,
            )
    return 0 if under else 1


if __name__ == "__main__":
    raise SystemExit(main())
