"""Importing a folder again downloads only what changed, on each route: files as the last
import found them are settled `unchanged` with its images and never downloaded; a changed
and an added file are downloaded and imported. Downloads are counted at the fake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from imageimport.db.models import Image, ImportItem
from imageimport.runtime import Runtime
from imageimport.services.embedded import Snapshot, run_import
from imageimport.settings import Settings
from tests.fakes.dropbox import FakeDropbox
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.fakes.gdrive import FakeDrive
from tests.pipeline.routes import ROUTES, Route, start_route

# The routes that tell a changed file from an unchanged one: by checksum (the APIs), or by
# size and modification time (the ZIP). Drive's public pages give neither.
COMPARING = [name for name in ROUTES if name != "gdrive-public"]


def photos() -> FakeFolder:
    """A folder of its own per test: the tests change it at the fake."""
    red = make_image(64, 48, "JPEG", seed=801)
    return FakeFolder(
        "Growing photos",
        [
            FakeFile("red.jpg", red, "image/jpeg"),
            FakeFile("copy of red.jpg", red, "image/jpeg"),
            FakeFile("blue.png", make_image(40, 30, "PNG", seed=802), "image/png"),
            FakeFolder("sub", [FakeFile("green.webp", make_image(32, 32, "WEBP", seed=803))]),
        ],
    )


def fake(route: Route) -> Any:
    state = route.server.app.app.state  # type: ignore[attr-defined]
    return state.drive if route.name.startswith("gdrive") else state.dropbox


def downloads(route: Route) -> list[str]:
    """The file downloads the fake has answered so far (ids, or paths for Dropbox's API)."""
    state = fake(route)
    if isinstance(state, FakeDrive):
        if route.name == "gdrive-api":
            return [
                r.path.rpartition("/")[2] for r in state.requests if r.params.get("alt") == "media"
            ]
        return [r.params["id"] for r in state.calls("/download")]
    assert isinstance(state, FakeDropbox)
    return [arg["path"] for arg in state.route_calls("sharing/get_shared_link_file")]


def items(runtime: Runtime, import_id: str) -> dict[str, ImportItem]:
    with runtime.session() as session:
        rows = session.scalars(select(ImportItem).where(ImportItem.import_id == import_id))
        return {item.path: item for item in rows}


def counts(result: Snapshot) -> tuple[int, int, int, int, int]:
    c = result.counters
    return c.discovered, c.imported, c.duplicates, c.unchanged, c.failed


def _runtime(route: Route, make_settings: Callable[..., Settings], database_url: str) -> Runtime:
    return Runtime(make_settings(database_url=database_url, **route.settings))


@pytest.mark.parametrize("route_name", ROUTES)
def test_a_folder_imported_again_unchanged_downloads_nothing(
    route_name: str, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    folder = photos()
    with start_route(route_name, folder) as route:
        runtime = _runtime(route, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            assert first.state == "succeeded", first.error
            assert counts(first) == (4, 3, 1, 0, 0)
            fetched = len(downloads(route))
            with runtime.session() as session:
                images = {i.sha256: i.id for i in session.scalars(select(Image))}
            before = items(runtime, first.import_id)

            second = run_import(runtime, route.url, concurrency=4)
            assert second.state == "succeeded", second.error
            again = items(runtime, second.import_id)
            if route.name == "gdrive-public":
                # No checksum, size or time to compare: every file is fetched and found stored.
                assert counts(second) == (4, 0, 4, 0, 0)
                assert len(downloads(route)) == 2 * fetched
            else:
                assert counts(second) == (4, 0, 0, 4, 0)
                assert second.counters.bytes == 0
                assert len(downloads(route)) == fetched  # not one file more
                for path, item in again.items():
                    # Each points at the image its file's earlier version is stored as.
                    assert (item.state, item.image_id) == ("unchanged", before[path].image_id)
                    assert item.attempts == 0 and item.bytes is None
            with runtime.session() as session:
                assert {i.sha256: i.id for i in session.scalars(select(Image))} == images
            if route.name == "dropbox-zip":
                assert fake(route).zip_downloads == 2  # the archive is the listing
        finally:
            runtime.close()


@pytest.mark.parametrize("route_name", COMPARING)
def test_only_a_changed_and_an_added_file_are_downloaded(
    route_name: str, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    folder = photos()
    with start_route(route_name, folder) as route:
        runtime = _runtime(route, make_settings, database_url)
        try:
            first = run_import(runtime, route.url, concurrency=4)
            assert first.state == "succeeded", first.error
            fetched = len(downloads(route))
            files = dict(folder.files())
            files["blue.png"].overwrite(make_image(41, 30, "PNG", seed=804))
            sub = folder.children[3]
            assert isinstance(sub, FakeFolder)
            fake(route).add(sub, FakeFile("new.jpg", make_image(20, 20, "JPEG", seed=805)))

            second = run_import(runtime, route.url, concurrency=4)
            assert second.state == "succeeded", second.error
            assert counts(second) == (5, 2, 0, 3, 0)
            states = {path: item.state for path, item in items(runtime, second.import_id).items()}
            assert states == {
                "red.jpg": "unchanged",
                "copy of red.jpg": "unchanged",
                "blue.png": "done",
                "sub/green.webp": "unchanged",
                "sub/new.jpg": "done",
            }
            if route.name != "dropbox-zip":  # a ZIP's files are read from the archive
                fresh = downloads(route)[fetched:]
                wanted = (
                    {"/blue.png", "/sub/new.jpg"}
                    if route.name == "dropbox-api"
                    else {files["blue.png"].id, sub.children[-1].id}
                )
                assert sorted(fresh) == sorted(wanted)
            with runtime.session() as session:
                paths = [i.path for i in session.scalars(select(Image))]
            # The changed file's new bytes are a new image; its earlier version stays.
            assert len(paths) == 5 and paths.count("blue.png") == 2 and "sub/new.jpg" in paths

            # And a third import finds everything as the second left it.
            third = run_import(runtime, route.url, concurrency=4)
            assert counts(third) == (5, 0, 0, 5, 0)
        finally:
            runtime.close()
