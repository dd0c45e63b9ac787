"""Verifying an image and making its thumbnail: the worker's Pillow code (`inspect`) against
libvips (pyvips), on the benchmark's own images, one thread each, alternated.

libvips does the same job as `inspect` here: it decodes every pixel (at reduced scale where
the format allows it, failing on truncated or damaged data), keeps the EXIF, shrinks to the
thumbnail box and encodes it as WebP at quality 80 with the fastest effort. CPU is the
process's own (`time.process_time`), with libvips held to one thread so that both count
the same work."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.dataset import BenchImage
from bench.stats import rounded

THUMBNAIL_SIZE = 400
MAX_PIXELS = 100_000_000
ROUNDS = 3  # Pillow, libvips, Pillow, libvips, ...: the best round of each counts


def run_imaging(images: Sequence[BenchImage], sample: int) -> dict[str, Any]:
    files = [(image, Path(image.path).read_bytes()) for image in _sample(images, sample)]
    pillow = _pillow()
    libvips = _libvips()
    if libvips is None:
        return {
            "images": len(files),
            "libvips": None,
            "skipped": "pyvips is not installed (it comes with pip install -e '.[dev]')",
        }
    _check_same_job(files, pillow, libvips)
    best: dict[str, dict[str, float]] = {"pillow": {}, "libvips": {}}
    for _ in range(ROUNDS):
        for name, convert in (("pillow", pillow), ("libvips", libvips)):
            for fmt, ms in _cpu_ms_per_image(files, convert).items():
                best[name][fmt] = min(best[name].get(fmt, ms), ms)
    counts: dict[str, int] = defaultdict(int)
    for image, _ in files:
        counts[image.format] += 1
    result: dict[str, Any] = {
        "images": len(files),
        "thumbnail_px": THUMBNAIL_SIZE,
        "rounds": ROUNDS,
        "libvips": _version(),
        "per_format": {},
    }
    for name in ("pillow", "libvips"):
        mean = sum(best[name][fmt] * n for fmt, n in counts.items()) / len(files)
        result[f"{name}_cpu_ms_per_image"] = rounded(mean)
    for fmt, n in sorted(counts.items()):
        result["per_format"][fmt] = {
            "images": n,
            "pillow_cpu_ms": rounded(best["pillow"][fmt]),
            "libvips_cpu_ms": rounded(best["libvips"][fmt]),
        }
    result["faster"] = (
        "pillow"
        if result["pillow_cpu_ms_per_image"] <= result["libvips_cpu_ms_per_image"]
        else "libvips"
    )
    return result


def _sample(images: Sequence[BenchImage], sample: int) -> list[BenchImage]:
    """Up to `sample` images in the mix's proportions, spread over the whole set."""
    step = max(1, len(images) // max(1, sample))
    return list(images[::step][:sample])


def _check_same_job(
    files: Sequence[tuple[BenchImage, bytes]], *converters: Callable[[bytes], bytes]
) -> None:
    """Both make a WebP thumbnail of the same size (within a pixel of rounding) of each file:
    the comparison is of the same work."""
    from PIL import Image

    for image, data in files:
        sizes = []
        for convert in converters:
            with Image.open(io.BytesIO(convert(data))) as thumb:
                if thumb.format != "WEBP":
                    raise RuntimeError(f"{image.name}: a {thumb.format} thumbnail, not WebP")
                sizes.append(thumb.size)
        if any(abs(a - b) > 1 for size in sizes for a, b in zip(size, sizes[0], strict=True)):
            raise RuntimeError(f"{image.name}: thumbnails of different sizes {sizes}")


def _cpu_ms_per_image(
    files: Sequence[tuple[BenchImage, bytes]], convert: Callable[[bytes], bytes]
) -> dict[str, float]:
    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for image, data in files:
        started = time.process_time()
        convert(data)
        spent[image.format] += time.process_time() - started
        counts[image.format] += 1
    return {fmt: 1000 * spent[fmt] / counts[fmt] for fmt in spent}


def _pillow() -> Callable[[bytes], bytes]:
    from imageimport.pipeline.imaging import inspect

    def convert(data: bytes) -> bytes:
        return inspect(io.BytesIO(data), MAX_PIXELS, THUMBNAIL_SIZE).thumbnail

    return convert


def _libvips() -> Callable[[bytes], bytes] | None:
    try:
        import pyvips
    except (ImportError, OSError):  # OSError: the package without its shared library
        return None
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)  # every image is new to a worker

    def convert(data: bytes) -> bytes:
        thumb = pyvips.Image.thumbnail_buffer(
            data, THUMBNAIL_SIZE, height=THUMBNAIL_SIZE, size="down", fail_on="error"
        )
        thumb.get_fields()  # the EXIF and the rest of the metadata, as inspect reads them
        encoded: bytes = thumb.webpsave_buffer(Q=80, effort=0, keep="none")
        return encoded

    return convert


def _version() -> str:
    import pyvips

    return ".".join(str(pyvips.version(i)) for i in range(3))
