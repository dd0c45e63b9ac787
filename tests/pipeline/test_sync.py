"""A sync round lists an import's folder again into the same import: unchanged files are not
downloaded, a changed and an added file are, a removed one is marked gone, and with pruning
its image is deleted unless a file still in a folder (of this or another import) holds it.
One round at a time. Downloads are counted at the fake."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from imageimport import db
from imageimport.db.models import Image
from imageimport.errors import SyncRefused
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.services.embedded import Snapshot, run_import, run_sync, snapshot
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image
from tests.pipeline.routes import start_route
from tests.pipeline.test_reimport import COMPARING, downloads, fake, items, photos
from tests.services.test_importer import wait_for


def _runtime(settings: dict, make_settings: Callable[..., Settings], database_url: str) -> Runtime:
    return Runtime(make_settings(database_url=database_url, **settings))


def images(runtime: Runtime) -> dict[int, Image]:
    with runtime.session() as session:
        return {image.id: image for image in session.scalars(select(Image))}


def tally(result: Snapshot) -> tuple[int, int, int, int, int]:
    sync = result.last_sync
    assert sync is not None
    return sync.added, sync.changed, sync.unchanged, sync.gone, sync.pruned


@pytest.mark.parametrize("route_name", COMPARING)
def test_a_sync_of_an_unchanged_folder_downloads_nothing(
    route_name: str, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    with start_route(route_name, photos()) as route:
        runtime = _runtime(route.settings, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            assert first.state == "succeeded", first.error
            assert first.last_sync is None
            fetched = len(downloads(route))
            before = {
                path: (i.state, i.image_id) for path, i in items(runtime, first.import_id).items()
            }

            synced = run_sync(runtime, first.import_id, concurrency=4)
            assert (synced.import_id, synced.state) == (first.import_id, "succeeded")
            assert len(downloads(route)) == fetched  # not one file more
            assert tally(synced) == (0, 0, 4, 0, 0)
            assert synced.counters == first.counters
            sync = synced.last_sync
            assert sync is not None and sync.round == 1 and sync.trigger == "cli"
            assert sync.listed_at is not None and sync.finished_at is not None
            assert sync.error is None and not sync.prune
            after = items(runtime, first.import_id)
            # Settled files stay as they were settled, found by this round.
            assert {path: (i.state, i.image_id) for path, i in after.items()} == before
            assert {i.seen_round for i in after.values()} == {1}
        finally:
            runtime.close()


@pytest.mark.parametrize("prune", [False, True], ids=["keep", "prune"])
@pytest.mark.parametrize("route_name", COMPARING)
def test_a_sync_downloads_the_changed_and_added_files_and_marks_the_removed_one_gone(
    route_name: str, prune: bool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    folder = photos()
    with start_route(route_name, folder) as route:
        runtime = _runtime(route.settings, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            assert first.state == "succeeded", first.error
            fetched = len(downloads(route))
            before = items(runtime, first.import_id)
            stored = images(runtime)
            green = stored[before["sub/green.webp"].image_id or 0]
            files = dict(folder.files())
            files["blue.png"].overwrite(make_image(41, 30, "PNG", seed=804))
            sub = folder.children[3]
            assert isinstance(sub, FakeFolder)
            fake(route).add(sub, FakeFile("new.jpg", make_image(20, 20, "JPEG", seed=805)))
            fake(route).remove(files["sub/green.webp"])

            synced = run_sync(runtime, first.import_id, concurrency=4, prune=prune)
            assert synced.state == "succeeded", synced.error
            assert tally(synced) == (1, 1, 2, 1, 1 if prune else 0)
            c = synced.counters
            assert (c.discovered, c.imported, c.duplicates, c.gone, c.failed) == (4, 3, 1, 1, 0)
            after = items(runtime, first.import_id)
            assert {path: item.state for path, item in after.items()} == {
                "red.jpg": before["red.jpg"].state,  # one of the two is done, the other a
                "copy of red.jpg": before["copy of red.jpg"].state,  # duplicate, unchanged
                "blue.png": "done",
                "sub/green.webp": "gone",
                "sub/new.jpg": "done",
            }
            if route.name != "dropbox-zip":  # a ZIP's files are read from the archive
                wanted = (
                    {"/blue.png", "/sub/new.jpg"}
                    if route.name == "dropbox-api"
                    else {files["blue.png"].id, sub.children[-1].id}
                )
                assert sorted(downloads(route)[fetched:]) == sorted(wanted)
            # By digest: SQLite gives a deleted image's id to the next one.
            now = {image.sha256 for image in images(runtime).values()}
            # The changed file's earlier version stays an image; the new one is another.
            assert after["blue.png"].image_id not in (None, before["blue.png"].image_id)
            assert stored[before["blue.png"].image_id or 0].sha256 in now
            assert (green.sha256 in now) is not prune
            for key in (green.object_key, green.thumbnail_key):
                assert runtime.store.exists(key) is not prune
            assert (after["sub/green.webp"].image_id is None) is prune
        finally:
            runtime.close()


def test_pruning_keeps_an_image_that_a_file_still_in_a_folder_holds(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    folder = photos()
    with start_route("gdrive-api", folder) as route:
        runtime = _runtime(route.settings, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            second = run_import(runtime, route.url, concurrency=4)  # the same folder again
            assert (first.state, second.state) == ("succeeded", "succeeded")
            stored = images(runtime)
            before = items(runtime, first.import_id)
            red = stored[before["red.jpg"].image_id or 0]
            green = stored[before["sub/green.webp"].image_id or 0]
            files = dict(folder.files())
            # red.jpg's image is also its copy's (in both imports), green's the second import's.
            fake(route).remove(files["red.jpg"])
            fake(route).remove(files["sub/green.webp"])

            synced = run_sync(runtime, first.import_id, concurrency=4, prune=True)
            assert tally(synced) == (0, 0, 2, 2, 0)
            assert images(runtime).keys() == stored.keys()

            # Once the second import finds green gone too, nothing holds its image any more;
            # the copy of red still holds red's.
            synced = run_sync(runtime, second.import_id, concurrency=4, prune=True)
            assert tally(synced) == (0, 0, 2, 2, 1)
            assert images(runtime).keys() == stored.keys() - {green.id}
            assert not runtime.store.exists(green.object_key)
            assert runtime.store.exists(red.object_key)
        finally:
            runtime.close()


def test_one_sync_round_at_a_time(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    with start_route("gdrive-api", big_folder(120, seed=9)) as route:
        route.faults.latency = 0.02
        runtime = _runtime(route.settings, make_settings, database_url)
        queue = MemoryQueue()
        pool = WorkerPool(runtime, queue, 2)
        pool.start()
        importer = Importer(runtime, queue)
        try:
            import_id = importer.start(route.url)
            with pytest.raises(SyncRefused, match="still running"):
                importer.sync(import_id)  # the import itself runs
            wait_for(lambda: snapshot(runtime, import_id).finished)
            wait_for(lambda: not importer.is_planning(import_id))

            assert importer.sync(import_id, trigger="api") == 1
            with pytest.raises(SyncRefused, match="still running"):
                importer.sync(import_id, prune=True)  # a round runs
            wait_for(lambda: snapshot(runtime, import_id).finished)
            wait_for(lambda: not importer.is_planning(import_id))
            snap = snapshot(runtime, import_id)
            assert snap.last_sync is not None
            assert (snap.last_sync.round, snap.last_sync.prune) == (1, False)
            assert snap.last_sync.unchanged == 120

            with pytest.raises(LookupError):
                importer.sync("00000000-0000-0000-0000-000000000000")
        finally:
            pool.stop()
            runtime.close()


def test_a_round_listed_again_after_a_crash_counts_and_publishes_nothing_twice(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    folder = photos()
    with start_route("gdrive-api", folder) as route:
        runtime = _runtime(route.settings, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            files = dict(folder.files())
            files["blue.png"].overwrite(make_image(41, 30, "PNG", seed=806))
            fake(route).add(folder, FakeFile("new.jpg", make_image(22, 20, "JPEG", seed=807)))
            fake(route).remove(files["sub/green.webp"])
            queue = MemoryQueue()  # no workers: the round's jobs wait in it
            importer = Importer(runtime, queue)
            assert importer.sync(first.import_id) == 1
            importer.wait()
            listed = snapshot(runtime, first.import_id)
            assert (listed.state, queue.outstanding()) == ("importing", 2)
            assert tally(listed) == (1, 1, 2, 1, 0)

            # The planner's process stopped before the round moved on: the import is listed
            # again, in the same round.
            with runtime.session() as session:
                db.list_again(session, first.import_id)
            importer.plan_in_background(first.import_id)
            importer.wait()
            again = snapshot(runtime, first.import_id)
            assert again.state == "importing"
            assert queue.outstanding() == 2  # the same two jobs, not published twice
            assert tally(again) == (1, 1, 2, 1, 0)
            assert again.counters == listed.counters
        finally:
            runtime.close()
