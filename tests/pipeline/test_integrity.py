"""Downloads checked against the checksum the source gives, through each route that gives one
(Drive's md5Checksum, Dropbox's content_hash): wrong bytes once are downloaded again and the
right ones stored; wrong bytes every time fail that file with the reason, and the rest of the
import is unaffected. A file changed at its source after it was listed is checked against the
checksum it has now, and its item records that checksum, which the next import compares."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from imageimport.db.models import Image, ImportItem
from imageimport.pipeline.download import Limits, download
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import, snapshot
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from imageimport.sources.checksums import ChecksumMismatch
from imageimport.sources.registry import open_source
from tests.fakes.folder import EVERY_DOWNLOAD, Corruption, FakeFile, FakeFolder, make_image
from tests.pipeline.routes import Route, start_route

MAX_DELIVER = 3
SERVICE = {"gdrive-api": ("Google Drive", "md5"), "dropbox-api": ("Dropbox", "content_hash")}


def corruption_of(route: Route) -> Corruption:
    state = route.server.app.app.state  # type: ignore[attr-defined]
    fake = state.drive if route.name.startswith("gdrive") else state.dropbox
    return fake.corruption  # type: ignore[no-any-return]


@pytest.mark.parametrize("route_name", sorted(SERVICE))
def test_wrong_bytes_are_downloaded_again_and_never_stored(
    route_name: str, make_settings: Callable[..., Settings]
) -> None:
    good = [FakeFile(f"ok-{i}.jpg", make_image(60, 40, "JPEG", seed=30 + i)) for i in range(4)]
    once = FakeFile("once.jpg", make_image(300, 200, "JPEG", seed=41))
    always = FakeFile("always.jpg", make_image(200, 100, "JPEG", seed=42))
    folder = FakeFolder(f"shaky-{route_name}", [*good, once, always])
    corrupt = {once.id: 1, always.id: EVERY_DOWNLOAD}
    with start_route(route_name, folder, corrupt=corrupt) as route:
        runtime = Runtime(make_settings(max_deliver=MAX_DELIVER, **route.settings))
        try:
            result = run_import(runtime, route.url, concurrency=4)
            with runtime.session() as session:
                items = {
                    i.name: i
                    for i in session.scalars(
                        select(ImportItem).where(ImportItem.import_id == result.import_id)
                    )
                }
                stored = set(session.scalars(select(Image.sha256)))
        finally:
            runtime.close()
        served_wrong = dict(corruption_of(route).served)

    assert result.state == "completed_with_failures", result.error
    assert {name: item.state for name, item in items.items()} == {
        **{f.name: "done" for f in good},
        "once.jpg": "done",
        "always.jpg": "failed",
    }
    # What is stored is the file's own bytes, never the damaged ones.
    assert stored == {hashlib.sha256(f.read()).hexdigest() for f in [*good, once]}
    assert served_wrong == {once.id: 1, always.id: MAX_DELIVER}
    service, name = SERVICE[route_name]
    reason = items["always.jpg"].reason or ""
    assert reason.startswith(
        f"Gave up after {MAX_DELIVER} attempts: The bytes downloaded for 'always.jpg' do not "
        f"match the checksum {service} gives for this file ({name} "
    ), reason
    assert items["once.jpg"].reason is None


@pytest.mark.parametrize("route_name", sorted(SERVICE))
def test_a_file_changed_after_it_was_listed_is_checked_against_its_checksum_now(
    route_name: str, make_settings: Callable[..., Settings]
) -> None:
    photo = FakeFile("photo.jpg", make_image(80, 60, "JPEG", seed=51))
    folder = FakeFolder(f"changing-{route_name}", [FakeFile("other.jpg", b"x"), photo])
    with start_route(route_name, folder) as route:
        settings = make_settings(**route.settings)
        with open_source(route.url, settings) as source:
            listed = next(f for f in source.list() if f.name == "photo.jpg")
            # Fixed at its source, as someone does before retrying a failed file.
            photo.content = make_image(80, 60, "JPEG", seed=52)
            fetched = download(source, listed, Limits.of(settings))
            fetched.file.close()
            assert fetched.sha256 == hashlib.sha256(photo.content).hexdigest()
            # Damaged bytes of the changed file are still told apart.
            corruption_of(route).times[photo.id] = 1
            with pytest.raises(ChecksumMismatch):
                download(source, listed, Limits.of(settings))


def _photo_item(runtime: Runtime, import_id: str) -> ImportItem:
    with runtime.session() as session:
        return session.scalars(
            select(ImportItem).where(
                ImportItem.import_id == import_id, ImportItem.name == "photo.jpg"
            )
        ).one()


@pytest.mark.parametrize("route_name", sorted(SERVICE))
def test_a_file_fixed_at_its_source_and_retried_is_recorded_as_it_is_now(
    route_name: str, make_settings: Callable[..., Settings]
) -> None:
    """Its item keeps the checksum of the bytes stored, not the one listed before the fix:
    importing the folder again then finds it unchanged instead of downloading it again."""
    photo = FakeFile("photo.jpg", make_image(80, 60, "JPEG", seed=61))
    folder = FakeFolder(f"fixed-{route_name}", [FakeFile("other.png", make_image(9, 9)), photo])
    with start_route(route_name, folder, corrupt={photo.id: EVERY_DOWNLOAD}) as route:
        runtime = Runtime(make_settings(max_deliver=1, **route.settings))
        queue = MemoryQueue()
        pool = WorkerPool(runtime, queue, 2)
        try:
            first = run_import(runtime, route.url, concurrency=2)
            assert _photo_item(runtime, first.import_id).state == "failed"
            listed_before = _photo_item(runtime, first.import_id).checksum

            corruption_of(route).times.clear()
            photo.overwrite(make_image(80, 60, "JPEG", seed=62))  # fixed, then retried
            pool.start()
            assert Importer(runtime, queue).retry(first.import_id) == 1
            deadline = time.monotonic() + 60
            while queue.outstanding() or not snapshot(runtime, first.import_id).finished:
                assert time.monotonic() < deadline, "the retry did not finish"
                time.sleep(0.05)
            fixed = _photo_item(runtime, first.import_id)
            assert fixed.state == "done"
            assert fixed.checksum != listed_before
            with open_source(route.url, runtime.settings) as source:
                (listed_now,) = [f for f in source.list() if f.name == "photo.jpg"]
            assert fixed.checksum == listed_now.checksum

            again = run_import(runtime, route.url, concurrency=2)
            assert _photo_item(runtime, again.import_id).state == "unchanged"
        finally:
            pool.stop()
            runtime.close()
