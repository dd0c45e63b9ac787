"""Cancelling and retrying imports (the Importer shared by the CLI, API and operator)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select

from imageimport.db.models import Image
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.services.embedded import snapshot
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image
from tests.fakes.server import Fault
from tests.pipeline.routes import start_route


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def running(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Callable]:
    started: list[tuple[Runtime, WorkerPool]] = []

    def start(route_settings: dict, **overrides: object) -> tuple[Runtime, MemoryQueue, Importer]:
        runtime = Runtime(make_settings(database_url=database_url, **route_settings, **overrides))
        queue = MemoryQueue()
        pool = WorkerPool(runtime, queue, 2)
        pool.start()
        started.append((runtime, pool))
        return runtime, queue, Importer(runtime, queue)

    yield start
    for runtime, pool in started:
        pool.stop()
        runtime.close()


def test_cancel_settles_the_remaining_items_without_processing_them(running: Callable) -> None:
    with start_route("gdrive-api", big_folder(300, seed=3)) as route:
        route.faults.latency = 0.02
        runtime, queue, importer = running(route.settings)
        import_id = importer.start(route.url)
        wait_for(lambda: snapshot(runtime, import_id).counters.imported >= 10)
        assert importer.cancel(import_id)
        wait_for(lambda: queue.outstanding() == 0 and not importer.is_planning(import_id))
        snap = snapshot(runtime, import_id)
        assert snap.state == "cancelled"
        c = snap.counters
        assert c.pending == 0
        assert c.cancelled > 100
        assert c.imported + c.cancelled == c.discovered
        # No image row for a cancelled file, even one that was in flight at the cancel.
        with runtime.session() as session:
            assert session.scalar(select(func.count()).select_from(Image)) == c.imported
        assert not importer.cancel(import_id)  # already over


def test_retry_publishes_only_the_failed_items_again(running: Callable) -> None:
    flaky = FakeFile("flaky.png", make_image(30, 20, "PNG", seed=5))
    folder = FakeFolder(
        "retry",
        [flaky, *[FakeFile(f"ok-{i}.png", make_image(9, 9, "PNG", seed=i)) for i in range(5)]],
    )
    with start_route("gdrive-api", folder) as route:
        # Fails both of its two allowed attempts in the first round, then works.
        route.faults.add(Fault("500", path=f"/drive/v3/files/{flaky.id}", times=2))
        runtime, queue, importer = running(route.settings, max_deliver=2, source_retry_attempts=1)
        import_id = importer.start(route.url)
        wait_for(lambda: snapshot(runtime, import_id).finished and queue.outstanding() == 0)
        first = snapshot(runtime, import_id)
        assert first.state == "completed_with_failures"
        assert (first.counters.imported, first.counters.failed) == (5, 1)

        assert importer.retry(import_id) == 1
        wait_for(lambda: snapshot(runtime, import_id).finished and queue.outstanding() == 0)
        second = snapshot(runtime, import_id)
        assert second.state == "succeeded"
        assert (second.counters.imported, second.counters.failed) == (6, 0)
        assert importer.retry(import_id) == 0  # nothing left to retry


def test_restart_with_the_in_process_queue_publishes_pending_files_again(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with start_route("gdrive-api", big_folder(40, seed=8)) as route:
        settings = make_settings(database_url=database_url, **route.settings)
        # First process: lists the folder, then "dies" before any worker ran.
        first = Runtime(settings)
        importer = Importer(first, MemoryQueue())
        import_id = importer.start(route.url)
        importer.wait()
        assert snapshot(first, import_id).counters.pending == 40
        first.close()

        second = Runtime(settings)
        queue = MemoryQueue()
        pool = WorkerPool(second, queue, 4)
        pool.start()
        try:
            assert Importer(second, queue).resume_interrupted() == [import_id]
            wait_for(lambda: snapshot(second, import_id).finished)
            assert snapshot(second, import_id).counters.imported == 40
        finally:
            pool.stop()
            second.close()
