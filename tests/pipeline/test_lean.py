"""Lean mode in one process: headers read without decoding, with every bound a full decode
has; the original stored alone and the image unverified; its thumbnail made afterwards, once
per process however many ask at once; damaged pixels found then mark the image corrupt."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from imageimport.db.models import Image, Import
from imageimport.errors import CorruptImage, ImageTooLarge
from imageimport.pipeline import thumbnails
from imageimport.pipeline.decode_budget import DecodeBudget
from imageimport.pipeline.imaging import ImageInfo, inspect, read_header
from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import
from imageimport.settings import Settings
from tests.fakes.folder import lean_folder, make_image
from tests.pipeline.routes import start_route

LEAN = lean_folder("Lean in one process")
MAX_PIXELS = 100_000_000


@pytest.mark.parametrize(("path", "content"), [(p, f.read()) for p, f in LEAN.folder.files()])
def test_the_headers_tell_what_a_full_decode_records(path: str, content: bytes) -> None:
    header = read_header(io.BytesIO(content), MAX_PIXELS, 400, DecodeBudget(1024**3))
    if path in LEAN.corrupt:
        with pytest.raises(CorruptImage):
            inspect(io.BytesIO(content), MAX_PIXELS, 400, DecodeBudget(1024**3))
        return
    full = inspect(io.BytesIO(content), MAX_PIXELS, 400, DecodeBudget(1024**3))
    assert {k: v for k, v in full.__dict__.items() if k != "thumbnail"} == header.__dict__
    assert not isinstance(header, ImageInfo)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header announces another size (a decompression bomb's shape)."""
    real = make_image(8, 8, "PNG", seed=71)
    ihdr = struct.pack(">II", width, height) + real[24:29]
    chunk = b"IHDR" + ihdr
    return real[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[33:]


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_claiming(12_000, 12_000)
    with pytest.raises(CorruptImage, match=r"12000x12000 pixels is more than the limit"):
        read_header(io.BytesIO(bomb), MAX_PIXELS, 400, DecodeBudget(1024**3))


def test_an_image_too_large_for_the_decode_budget_is_refused_from_its_header() -> None:
    # Within the pixel limit, but its decode would never fit in a 64 MiB budget: its
    # thumbnail could never be made, so it is refused as a full import refuses it.
    large = png_claiming(6_000, 6_000)
    with pytest.raises(ImageTooLarge, match="DECODE_MEMORY_BYTES"):
        read_header(io.BytesIO(large), MAX_PIXELS, 400, DecodeBudget(64 * 1024**2))


@pytest.fixture
def imported(
    make_settings: Callable[..., Settings], database_url: str
) -> Iterator[tuple[Runtime, dict[str, Image]]]:
    with start_route("gdrive-api", LEAN.folder) as route:
        runtime = Runtime(make_settings(database_url=database_url, **route.settings))
        try:
            result = run_import(runtime, route.url, concurrency=4, options={"mode": "lean"})
            assert result.state == "succeeded", result.error
            assert result.counters.imported == len(LEAN.good) + len(LEAN.corrupt)
            with runtime.session() as session:
                images = {i.path: i for i in session.scalars(select(Image))}
                session.expunge_all()
            yield runtime, images
        finally:
            runtime.close()


def test_a_lean_import_stores_originals_only_and_thumbnails_follow(
    imported: tuple[Runtime, dict[str, Image]],
) -> None:
    runtime, images = imported
    assert {image.state for image in images.values()} == {"unverified"}
    assert sorted(runtime.store.list_keys()) == sorted(i.object_key for i in images.values())
    with runtime.session() as session:
        assert session.scalars(select(Import.options)).one()["mode"] == "lean"

    for path, image in images.items():
        state = thumbnails.make_thumbnail(runtime, image.id)
        assert state == ("corrupt" if path in LEAN.corrupt else "ready"), path
        assert runtime.store.exists(image.thumbnail_key) == (state == "ready")
    with runtime.session() as session:
        states = {i.path: i.state for i in session.scalars(select(Image))}
    assert states == {path: "ready" for path in LEAN.good} | {p: "corrupt" for p in LEAN.corrupt}
    # Settled: asking again decodes nothing and changes nothing.
    assert thumbnails.make_thumbnail(runtime, images["photo.jpg"].id) == "ready"
    assert thumbnails.make_thumbnail(runtime, images["cut.png"].id) == "corrupt"


def test_concurrent_first_requests_decode_an_image_once(
    imported: tuple[Runtime, dict[str, Image]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, images = imported
    decodes: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> ImageInfo:
        decodes.append(1)
        return inspect(*args, **kwargs)

    monkeypatch.setattr(thumbnails, "inspect", counted)
    image_id = images["photo.jpg"].id
    start = threading.Barrier(6)
    states: list[str | None] = []

    def ask() -> None:
        start.wait()
        states.append(thumbnails.make_thumbnail(runtime, image_id))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == ["ready"] * 6
    assert len(decodes) == 1
