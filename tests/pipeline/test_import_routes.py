"""End to end through each of the four routes: every image stored once, with the right
metadata; non-images skipped, corrupt and oversized files failed, each with a reason."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from imageimport.db.models import Image, ImportItem
from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import
from imageimport.settings import Settings
from tests.fakes.folder import TAKEN_AT, Expected, FakeFolder, sample_folder
from tests.fakes.server import Fault, FaultPlan
from tests.pipeline.routes import ROUTES, Route, start_route
from tests.servers import unique_bucket_name

SAMPLE, EXPECTED = sample_folder()


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest) -> Iterator[Route]:
    with start_route(request.param, SAMPLE) as running:
        yield running


def _sha(folder: FakeFolder, path: str) -> str:
    file = dict(folder.files())[path]
    return hashlib.sha256(file.read()).hexdigest()


def check_sample_import(runtime: Runtime, import_id: str, expected: Expected) -> None:
    with runtime.session() as session:
        images = {i.sha256: i for i in session.scalars(select(Image))}
        items = {
            i.path: i
            for i in session.scalars(select(ImportItem).where(ImportItem.import_id == import_id))
        }
    wanted = {_sha(SAMPLE, path): dims for path, dims in expected.images.items()}
    assert set(images) == set(wanted)
    for sha, (width, height, fmt) in wanted.items():
        image = images[sha]
        assert (image.width, image.height, image.format) == (width, height, fmt)
        assert image.object_key.startswith(f"images/{sha[:2]}/{sha}.")
        assert runtime.store.size(image.object_key) == image.size
        assert runtime.store.exists(image.thumbnail_key)
    assert sorted(runtime.store.list_keys()) == sorted(
        key for i in images.values() for key in (i.object_key, i.thumbnail_key)
    )
    red = images[_sha(SAMPLE, "red.jpg")]
    assert red.camera == "Canon EOS 5D"
    assert red.taken_at is not None
    assert red.taken_at.replace(tzinfo=None) == TAKEN_AT
    assert images[_sha(SAMPLE, "sub/deeper/deep.jpg")].path == "sub/deeper/deep.jpg"

    states = {path: item.state for path, item in items.items()}
    assert len(items) == len(SAMPLE.files())
    assert sorted(p for p, s in states.items() if s == "skipped") == sorted(expected.skipped)
    assert sorted(p for p, s in states.items() if s == "failed") == sorted(expected.failed)
    # Which of two identical files counts as the duplicate depends on which finishes first.
    duplicates = [p for p, s in states.items() if s == "duplicate"]
    assert len(duplicates) == len(expected.duplicates)
    assert set(duplicates) <= expected.duplicates | {"red.jpg"}
    assert sum(s == "done" for s in states.values()) == len(wanted)
    assert "too large" in (items["huge.jpg"].reason or "")
    assert "Corrupt or truncated" in (items["broken.jpg"].reason or "")
    assert "Not an image" in (items["notes.txt"].reason or "")


def test_import_then_reimport_adds_nothing(
    route: Route, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        database_url=database_url,
        max_file_size_bytes=EXPECTED.oversized_bytes,
        **route.settings,
    )
    runtime = Runtime(settings)
    try:
        first = run_import(runtime, route.url, concurrency=4)
        assert first.state == "completed_with_failures", first.error
        c = first.counters
        assert (c.discovered, c.imported, c.duplicates, c.skipped, c.failed) == (13, 8, 1, 2, 2)
        check_sample_import(runtime, first.import_id, EXPECTED)
        keys_before = sorted(runtime.store.list_keys())

        second = run_import(runtime, route.url, concurrency=4)
        c = second.counters
        # Drive's public pages give nothing to tell an unchanged file by: found stored again.
        unchanged = 0 if route.name == "gdrive-public" else 9
        assert (c.imported, c.duplicates, c.unchanged, c.skipped, c.failed) == (
            0,
            9 - unchanged,
            unchanged,
            2,
            2,
        )
        assert sorted(runtime.store.list_keys()) == keys_before
        with runtime.session() as session:
            assert session.scalar(select(func.count()).select_from(Image)) == 8
    finally:
        runtime.close()


def test_import_survives_rate_limits_errors_and_dropped_connections(
    make_settings: Callable[..., Settings], route_name: str
) -> None:
    faults = FaultPlan()
    # Every distinct path first answers 429 (with Retry-After), then 500, then cuts the
    # connection mid-body, then works.
    faults.add(
        Fault("429", times=1, retry_after=0.1),
        Fault("500", times=1),
        Fault("drop", times=1),
    )
    with start_route(route_name, SAMPLE, faults) as running:
        settings = make_settings(max_file_size_bytes=EXPECTED.oversized_bytes, **running.settings)
        runtime = Runtime(settings)
        try:
            result = run_import(runtime, running.url, concurrency=4)
            assert result.state == "completed_with_failures", result.error
            check_sample_import(runtime, result.import_id, EXPECTED)
        finally:
            runtime.close()
        assert sum(faults.seen.values()) > 0


@pytest.fixture(params=ROUTES)
def route_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_import_into_s3_and_postgres(
    route: Route,
    postgres_database: str,
    s3_server: Any,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        database_url=postgres_database,
        s3_bucket=unique_bucket_name(),
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        max_file_size_bytes=EXPECTED.oversized_bytes,
        **route.settings,
    )
    runtime = Runtime(settings)
    try:
        first = run_import(runtime, route.url, concurrency=4)
        assert first.state == "completed_with_failures", first.error
        check_sample_import(runtime, first.import_id, EXPECTED)
        keys = sorted(runtime.store.list_keys())
        second = run_import(runtime, route.url, concurrency=4)
        c = second.counters
        unchanged = 0 if route.name == "gdrive-public" else 9
        assert (c.imported, c.duplicates, c.unchanged) == (0, 9 - unchanged, unchanged)
        assert sorted(runtime.store.list_keys()) == keys
    finally:
        runtime.close()
