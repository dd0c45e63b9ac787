"""The benchmark's images: real JPEG, PNG and WebP files of about 100 KB ("standard") or
about 10 KB ("small", for runs of 100,000 images) with varied dimensions, made
deterministically from a seed and cached on disk, so a second run reads them instead of
making them again.

Image i depends only on (seed, i): a cache made by a smaller run is extended, never redone,
and generating in parallel gives the same bytes as generating in order."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageChops

CACHE_DIR = Path(__file__).parent / ".cache"
# The size each flavour's files land near.
TARGET_BYTES = {"standard": 100_000, "small": 10_000}
# (format, share of the images): photos are mostly JPEG.
FORMAT_MIX = (("JPEG", 0.70), ("PNG", 0.15), ("WEBP", 0.15))
EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Bytes per pixel this generator's pictures compress to, measured: it turns the target size
# into a pixel count, so files land near TARGET_BYTES without encoding twice.
BYTES_PER_PIXEL = {"JPEG": 0.20, "PNG": 0.133, "WEBP": 0.15}
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)
_TILE = 2048
_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class BenchImage:
    name: str
    path: str
    format: str
    mime_type: str
    size: int
    md5: str
    width: int
    height: int


def cache_dir(seed: int, flavour: str = "standard") -> Path:
    prefix = "" if flavour == "standard" else f"{flavour}-"
    return CACHE_DIR / f"{prefix}images-seed{seed}-v{_MANIFEST_VERSION}"


def dataset(count: int, seed: int = 0, flavour: str = "standard") -> list[BenchImage]:
    """`count` images of a flavour of TARGET_BYTES, made (in parallel) only where the cache
    does not have them yet."""
    target = TARGET_BYTES[flavour]
    directory = cache_dir(seed, flavour)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    known: list[BenchImage] = []
    if manifest.exists():
        # Paths are this directory's whatever the manifest says: a cache copied or moved from
        # another clone still finds its files.
        known = [
            BenchImage(**{**entry, "path": str(directory / entry["name"])})
            for entry in json.loads(manifest.read_text())
        ]
        # A file removed by hand is made again rather than served as missing.
        known = known[: next((i for i, m in enumerate(known) if not Path(m.path).exists()), None)]
    if len(known) < count:
        missing = [(seed, i, target, str(directory)) for i in range(len(known), count)]
        processes = max(1, os.cpu_count() or 1)
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            known += pool.map(_make_one, missing, chunksize=64)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(m) for m in known]))
        tmp.replace(manifest)
    return known[:count]


_tiles: dict[int, tuple[Image.Image, Image.Image]] = {}


def _tiles_for(seed: int) -> tuple[Image.Image, Image.Image]:
    """A noise tile and a gradient every image crops from: cheap texture, so encoders cannot
    shrink pictures to nothing, and different offsets and tints make every file distinct."""
    if seed not in _tiles:
        rng = random.Random(f"tile:{seed}")
        noise = Image.frombytes("RGB", (_TILE, _TILE), rng.randbytes(_TILE * _TILE * 3))
        noise = noise.point(lambda v: v * 32 // 256)
        gradient = Image.linear_gradient("L").resize((_TILE, _TILE)).point(lambda v: v // 2)
        _tiles[seed] = (noise, Image.merge("RGB", (gradient, gradient, gradient)))
    return _tiles[seed]


def pick_format(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for fmt, share in FORMAT_MIX:
        total += share
        if roll < total:
            return fmt
    return FORMAT_MIX[-1][0]


def _make_one(task: tuple[int, int, int, str]) -> BenchImage:
    seed, index, target, directory = task
    rng = random.Random(f"image:{seed}:{index}")
    fmt = pick_format(rng)
    pixels = target / BYTES_PER_PIXEL[fmt] * rng.uniform(0.75, 1.25)
    aspect = rng.choice(ASPECTS)
    width = min(_TILE - 1, max(64, round((pixels * aspect) ** 0.5)))
    height = min(_TILE - 1, max(64, round(pixels / width)))
    data = _encode(_picture(rng, seed, fmt, width, height), fmt)
    name = f"img-{index:06d}.{EXTENSION[fmt]}"
    path = Path(directory) / name
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return BenchImage(
        name=name,
        path=str(path),
        format=fmt,
        mime_type=MIME[fmt],
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        width=width,
        height=height,
    )


def _picture(rng: random.Random, seed: int, fmt: str, width: int, height: int) -> Image.Image:
    if fmt == "PNG":
        # PNG does not compress noise: blocks of quantised colour are what a ~100 KB PNG of
        # this many pixels looks like (a screenshot, a graphic).
        small = (max(1, width // 4), max(1, height // 4))
        blocks = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
        return blocks.point(lambda v: v // 64 * 64).resize(
            (width, height), Image.Resampling.NEAREST
        )
    noise, gradient = _tiles_for(seed)
    x, y = rng.randrange(_TILE - width), rng.randrange(_TILE - height)
    box = (x, y, x + width, y + height)
    tint = Image.new("RGB", (width, height), tuple(rng.randrange(128) for _ in range(3)))
    return ImageChops.add(ImageChops.add(gradient.crop(box), noise.crop(box)), tint)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, fmt, quality=85)
    elif fmt == "PNG":
        image.save(out, fmt, compress_level=3)
    else:
        image.save(out, fmt, quality=80, method=0)
    return out.getvalue()


def big_file(megabytes: int, seed: int = 0) -> BenchImage:
    """A real JPEG of about `megabytes` MB (quality 100 noise: ~4.1 bytes per pixel, so a
    300 MB file stays under the default pixel limit and goes the whole way through)."""
    directory = cache_dir(seed)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"big-{megabytes}mb.jpg"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return BenchImage(**{**json.loads(meta.read_text()), "path": str(path)})
    # In a child process: the raw pixels need more memory than this process should keep.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        image = pool.apply(_make_big, (megabytes, seed, str(path)))
    meta.write_text(json.dumps(asdict(image)))
    return image


def _make_big(megabytes: int, seed: int, path: str) -> BenchImage:
    rng = random.Random(f"big:{seed}:{megabytes}")
    pixels = megabytes * 1_000_000 / 4.1
    width = round((pixels * 4 / 3) ** 0.5)
    height = round(pixels / width)
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    tmp = Path(path).with_suffix(".part")
    noise.save(tmp, "JPEG", quality=100, subsampling=0)
    del noise
    digest = hashlib.md5()
    with tmp.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    tmp.replace(path)
    return BenchImage(
        name=Path(path).name,
        path=path,
        format="JPEG",
        mime_type="image/jpeg",
        size=Path(path).stat().st_size,
        md5=digest.hexdigest(),
        width=width,
        height=height,
    )
