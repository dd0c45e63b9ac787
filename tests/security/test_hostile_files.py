"""Hostile files through the whole pipeline, on every route: wrong or lying contents,
decompression bombs, oversized files and hostile names. Each ends in a final state with a
reason, nothing leaves the images/ key prefix, and the rest of the import goes on."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from imageimport.sources.gdrive import public as gdrive_public
from tests.fakes.folder import FakeFile
from tests.security.conftest import (
    ROUTES,
    SettingsFactory,
    assert_contained,
    images,
    imported,
    items_by_path,
    serve_route,
)
from tests.security.hostile import MiB, hostile_folder

LIMIT = 4 * MiB


def _sha(file: FakeFile) -> str:
    digest = hashlib.sha256()
    for chunk in file.chunks():
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("route_name", "database"),
    [
        *((name, "sqlite") for name in ROUTES),
        # On PostgreSQL too, for the routes that pass names through as the service gives
        # them (NUL bytes) and the one that builds long ids from them (the ZIP).
        pytest.param("gdrive-api", "postgres", marks=pytest.mark.postgres),
        pytest.param("dropbox-api", "postgres", marks=pytest.mark.postgres),
        pytest.param("dropbox-zip", "postgres", marks=pytest.mark.postgres),
    ],
)
def test_hostile_files_settle_cleanly_and_stay_in_their_prefix(
    route_name: str, database: str, request: pytest.FixtureRequest, make_settings: SettingsFactory
) -> None:
    database_url = (
        str(request.getfixturevalue("postgres_database")) if database == "postgres" else None
    )
    provider = route_name.split("-")[0]
    folder, expected = hostile_folder(provider, oversized=LIMIT * 10)
    with serve_route(route_name, folder) as route:
        settings = make_settings(
            database_url=database_url, max_file_size_bytes=LIMIT, **route.settings
        )
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures", result.error
            items = items_by_path(runtime, result.import_id)
            by_name = {item.name: item for item in items.values()}
            # Every file is one item in a final state; no state but those expected.
            assert Counter(item.state for item in items.values()) == Counter(expected.values())
            reasons = {name: by_name[name].reason or "" for name in expected if name in by_name}
            assert "empty" in reasons["empty.jpg"]
            for name in ("notes.jpg", "page.png", "vector.png", "garbage.png"):
                assert reasons[name].startswith("Not an image"), reasons[name]
            for name in ("truncated.jpg", "truncated.png"):
                assert "Corrupt or truncated" in reasons[name], reasons[name]
            for name in ("bomb.png", "bomb.jpg"):
                assert "too large to decode safely" in reasons[name], reasons[name]
            assert "File too large" in reasons["huge.jpg"]

            # Exactly the images are stored, each once, by content, with the extension of
            # its content: whatever its name or announced type said.
            files = dict(folder.files())
            wanted = {_sha(f) for p, f in files.items() if expected[f.name] == "done"}
            stored = {image.sha256: image for image in images(runtime)}
            assert set(stored) == wanted
            by_sha = {_sha(f): f.name for f in files.values()}
            extensions = {
                by_sha[sha]: image.object_key.rsplit(".", 1)[1] for sha, image in stored.items()
            }
            assert extensions["png-named.jpg"] == "png"
            assert extensions["jpeg-named.gif"] == "jpg"
            assert extensions["no-extension"] == "webp"
            for extension in ("gif", "webp", "png"):
                assert extensions[f"animated.{extension}"] == extension
            assert_contained(runtime, settings.data_dir)

        huge = files["huge.jpg"]
        sent = route.tap.sent_for(huge.name if route_name == "dropbox-api" else huge.id)
        if route_name == "gdrive-public":
            # No size is known up front: the download is cut as soon as it passes the limit,
            # give or take what the sockets buffer, never carried on to the end.
            assert LIMIT < sent < LIMIT + 12 * MiB, sent
        elif route_name in ("gdrive-api", "dropbox-api"):
            assert sent == 0, "the listed size alone should have refused it"


def test_an_endless_folder_page_is_cut_at_the_limit(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key-less Drive route reads HTML pages: one that never ends is read up to the
    page limit, not into memory whole."""
    monkeypatch.setattr(gdrive_public, "_MAX_PAGE_BYTES", MiB)
    folder, _ = hostile_folder("gdrive", oversized=LIMIT * 10)
    with serve_route("gdrive-public", folder) as route:
        block = b"<div>" + b"x" * (64 * 1024 - 5)
        route.tap.answer(r"^/embeddedfolderview", 200, block, repeat=640, content_type="text/html")
        with imported(make_settings(**route.settings), route.url) as (_, result):
            assert result.state == "failed"
            assert "larger than 1 MiB" in (result.error or ""), result.error
        sent = route.tap.sent_for("/embeddedfolderview")
    assert MiB < sent < MiB + 12 * MiB, sent
