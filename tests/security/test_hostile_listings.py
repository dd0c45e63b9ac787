"""Hostile listings: a source that answers the same page token forever, a new one forever, or
folders without end; more files than an import may list; names, paths and ids longer than
anything real. Each listing ends within its LISTING_MAX_* bound with a reason naming the
setting, what was listed until then is imported, and nothing stored outgrows its bound."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageimport.api import create_app
from imageimport.db.models import Image, ImportItem
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.memory import MemoryQueue
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from imageimport.sources.listing import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_PATH_CHARS
from tests.commands import run_imageimport
from tests.fakes.dropbox import link_key, rlkey
from tests.fakes.folder import FakeFile, FakeFolder
from tests.security.conftest import (
    ROUTES,
    Route,
    SettingsFactory,
    imported,
    items_by_path,
    serve_route,
)
from tests.security.hostile import image

FOLDER_MIME = "application/vnd.google-apps.folder"
TOKEN_REASON = "answered the same page token twice"
# A name the default ALLOWED_HOSTS answers to.
LOCAL = "http://127.0.0.1"
# Answers to the requests a rule takes over: a dict is sent as JSON, a str as an HTML page.
Rule = Callable[[str, dict[str, str], dict[str, Any]], dict[str, Any] | str | None]


@dataclass
class Intercept:
    """Wraps a fake: `rule(path, query, json body)` answers a request itself, or returns None
    to let the fake answer. `answered` counts the requests the rule took over."""

    app: ASGIApp
    rule: Rule
    answered: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        try:
            argument = json.loads(body) if body.startswith(b"{") else {}
        except ValueError:
            argument = {}
        answer = self.rule(scope["path"], query, argument)
        if answer is None:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        self.answered += 1
        response = JSONResponse(answer) if isinstance(answer, dict) else HTMLResponse(answer, 200)
        await response(scope, receive, send)


def intercept(route: Route, rule: Rule) -> Intercept:
    wrapped = Intercept(route.tap.app, rule)
    route.tap.app = wrapped
    return wrapped


def folder_with_abyss(files: int = 3) -> tuple[FakeFolder, FakeFolder]:
    """Some images at the top, then a folder the hostile source takes over: the images are
    listed (and must be imported) before anything hostile happens."""
    abyss = FakeFolder("abyss", [])
    root = FakeFolder(
        "Hostile listing",
        [FakeFile(f"{n}.jpg", image(300 + n), "image/jpeg") for n in range(files)] + [abyss],
    )
    return root, abyss


# -- what each route's hostile answers look like on the wire -----------------------------


def _drive_folder_of(query: dict[str, str]) -> str:
    match = re.match(r"\s*'([^']+)' in parents", query.get("q", ""))
    return match.group(1) if match else ""


def drive_pages(abyss: FakeFolder, next_token: Callable[[str | None], str]) -> Rule:
    """files.list of the abyss answers no files and the page token `next_token` chooses."""

    def rule(path: str, query: dict[str, str], _: dict[str, Any]) -> dict[str, Any] | None:
        if path != "/drive/v3/files" or _drive_folder_of(query) != abyss.id:
            return None
        token = next_token(query.get("pageToken"))
        return {"kind": "drive#fileList", "files": [], "nextPageToken": token}

    return rule


def dropbox_pages(next_cursor: Callable[[str | None], str]) -> Rule:
    """list_folder of /abyss, and every list_folder/continue, answer no entries, more to
    come, and the cursor `next_cursor` chooses."""

    def rule(path: str, _: dict[str, str], argument: dict[str, Any]) -> dict[str, Any] | None:
        if path == "/2/files/list_folder" and str(argument.get("path")).lower() == "/abyss":
            return {"entries": [], "cursor": next_cursor(None), "has_more": True}
        if path == "/2/files/list_folder/continue":
            return {"entries": [], "cursor": next_cursor(argument["cursor"]), "has_more": True}
        return None

    return rule


def endless_folders(route_name: str, abyss: FakeFolder) -> Rule:
    """The abyss, and every folder in it, holds one more folder."""
    numbers = itertools.count()

    def new_id() -> str:
        return f"endless{next(numbers):012d}"

    def drive_api(path: str, query: dict[str, str], _: dict[str, Any]) -> dict[str, Any] | None:
        folder = _drive_folder_of(query)
        if path != "/drive/v3/files" or not (folder == abyss.id or folder.startswith("endless")):
            return None
        child = {"kind": "drive#file", "id": new_id(), "name": "deeper", "mimeType": FOLDER_MIME}
        return {"kind": "drive#fileList", "files": [child]}

    def drive_public(path: str, query: dict[str, str], _: dict[str, Any]) -> str | None:
        folder = query.get("id", "")
        if path != "/embeddedfolderview" or not (
            folder == abyss.id or folder.startswith("endless")
        ):
            return None
        child = new_id()
        return (
            '<!DOCTYPE html><html><body><div class="flip-view-container"><div class="flip-entries">'
            f'<div class="flip-entry" id="entry-{child}"><div class="flip-entry-info">'
            f'<a href="https://drive.google.com/drive/folders/{child}">'
            '<div class="flip-entry-title">deeper</div></a></div></div></div></div></body></html>'
        )

    def dropbox(path: str, _: dict[str, str], argument: dict[str, Any]) -> dict[str, Any] | None:
        if path != "/2/files/list_folder" or not str(argument.get("path")).lower().startswith(
            "/abyss"
        ):
            return None
        child = {".tag": "folder", "name": "deeper", "id": f"id:{new_id()}"}
        return {"entries": [child], "cursor": "AAAA", "has_more": False}

    return {"gdrive-api": drive_api, "gdrive-public": drive_public, "dropbox-api": dropbox}[
        route_name
    ]


def assert_listed_files_imported(runtime: Any, import_id: str, root: FakeFolder) -> None:
    items = items_by_path(runtime, import_id)
    for file in root.children:
        if isinstance(file, FakeFile):
            assert items[file.name].state == "done", (file.name, items[file.name].reason)


# -- page tokens -------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-api", "dropbox-api"])
def test_a_page_token_answered_twice_ends_the_listing_at_once(
    route_name: str, make_settings: SettingsFactory
) -> None:
    root, abyss = folder_with_abyss()
    with serve_route(route_name, root) as route:
        same = "the-same-token-again"
        rule = (
            drive_pages(abyss, lambda _: same)
            if route_name == "gdrive-api"
            else dropbox_pages(lambda _: same)
        )
        tap = intercept(route, rule)
        with imported(make_settings(**route.settings), route.url) as (runtime, result):
            assert result.state == "failed"
            assert TOKEN_REASON in (result.error or ""), result.error
            assert "'abyss'" in (result.error or "")
            assert_listed_files_imported(runtime, result.import_id, root)
    # The first page, the token's first use; its second use is never sent.
    assert tap.answered == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-api", "dropbox-api"])
def test_page_tokens_without_end_stop_at_the_page_limit(
    route_name: str, make_settings: SettingsFactory
) -> None:
    root, abyss = folder_with_abyss()
    numbers = itertools.count()
    with serve_route(route_name, root) as route:
        rule = (
            drive_pages(abyss, lambda _: f"token-{next(numbers)}")
            if route_name == "gdrive-api"
            else dropbox_pages(lambda _: f"cursor-{next(numbers)}")
        )
        tap = intercept(route, rule)
        settings = make_settings(listing_max_pages=40, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert "LISTING_MAX_PAGES" in (result.error or ""), result.error
            assert_listed_files_imported(runtime, result.import_id, root)
    # 40 pages in all: the top folder's first, then the abyss's.
    assert tap.answered == 39


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-api", "dropbox-api"])
def test_a_listing_that_outlasts_its_time_stops(
    route_name: str, make_settings: SettingsFactory
) -> None:
    root, abyss = folder_with_abyss()
    numbers = itertools.count()

    def slowly(_: str | None) -> str:
        time.sleep(0.05)
        return f"token-{next(numbers)}"

    with serve_route(route_name, root) as route:
        rule = drive_pages(abyss, slowly) if route_name == "gdrive-api" else dropbox_pages(slowly)
        intercept(route, rule)
        settings = make_settings(listing_max_seconds=2, **route.settings)
        started = time.monotonic()
        with imported(settings, route.url) as (runtime, result):
            elapsed = time.monotonic() - started
            assert result.state == "failed"
            assert "LISTING_MAX_SECONDS" in (result.error or ""), result.error
            assert_listed_files_imported(runtime, result.import_id, root)
    assert elapsed < 60, elapsed  # 30x the limit: the import ended, it did not hang


# -- folders and files -------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-api", "gdrive-public", "dropbox-api"])
def test_folders_without_end_stop_at_the_folder_limit(
    route_name: str, make_settings: SettingsFactory
) -> None:
    root, abyss = folder_with_abyss()
    with serve_route(route_name, root) as route:
        tap = intercept(route, endless_folders(route_name, abyss))
        settings = make_settings(listing_max_folders=25, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert "LISTING_MAX_FOLDERS" in (result.error or ""), result.error
            assert_listed_files_imported(runtime, result.import_id, root)
    # 25 folders listed: the top one by the fake, the abyss and 23 below it by the rule. The
    # 26th is never asked for.
    assert tap.answered == 24


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ROUTES)
def test_more_files_than_the_limit_stop_the_listing(
    route_name: str, make_settings: SettingsFactory
) -> None:
    root = FakeFolder(
        "Many", [FakeFile(f"{n:02d}.jpg", image(400 + n), "image/jpeg") for n in range(8)]
    )
    with serve_route(route_name, root) as route:
        settings = make_settings(listing_max_files=5, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert "LISTING_MAX_FILES" in (result.error or ""), result.error
            items = items_by_path(runtime, result.import_id)
    # Exactly the files listed before the limit, every one of them imported.
    assert len(items) == 5
    assert {item.state for item in items.values()} == {"done"}


# -- sizes -------------------------------------------------------------------------------


def _nested(depth: int, name_chars: int, files: int) -> tuple[FakeFolder, list[FakeFile]]:
    bottom = [
        FakeFile("f" * name_chars + f"-{n}.jpg", image(500 + n), "image/jpeg") for n in range(files)
    ]
    folder = FakeFolder(f"{depth:03d}" + "d" * (name_chars - 3), list(bottom))
    for level in range(depth - 1, 0, -1):
        folder = FakeFolder(f"{level:03d}" + "d" * (name_chars - 3), [folder])
    return FakeFolder("Deep", [folder]), bottom


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("route_name", "depth"),
    # The ZIP format holds names of up to 65,535 bytes: a shallower tree there.
    [("gdrive-api", 100), ("gdrive-public", 100), ("dropbox-api", 100), ("dropbox-zip", 10)],
)
def test_long_names_and_deep_folders_are_stored_within_bounds(
    route_name: str, depth: int, make_settings: SettingsFactory
) -> None:
    root, bottom = _nested(depth, 5000, files=20)
    with serve_route(route_name, root) as route:
        settings = make_settings(**route.settings)
        with imported(settings, route.url) as (runtime, result):
            with runtime.session() as session:
                items = list(
                    session.scalars(
                        select(ImportItem).where(ImportItem.import_id == result.import_id)
                    )
                )
                stored = list(session.scalars(select(Image)))
            with TestClient(create_app(settings), base_url=LOCAL) as client:
                response = client.get(
                    f"/api/v1/imports/{result.import_id}/items", params={"limit": 1000}
                )
    assert response.status_code == 200, response.text[:500]
    for row in [*items, *stored]:
        assert len(row.name) <= MAX_NAME_CHARS and len(row.path) <= MAX_PATH_CHARS, len(row.path)
    if route_name == "dropbox-api":
        # Dropbox reads a file by its path: a path too long to keep is refused, with a reason.
        assert result.state == "completed_with_failures", result.error
        (refused,) = items
        assert refused.state == "failed"
        assert "This folder was not listed" in (refused.reason or ""), refused.reason
        assert "path in Dropbox is 5,000 characters long" in (refused.reason or "")
    else:
        assert result.state == "succeeded", result.error
        assert len(stored) == len(items) == len(bottom)
        for item in items:
            # Readable: the path starts with the top folder and ends with the file's name.
            assert item.path.startswith("001ddd") and item.path.endswith(".jpg"), item.path
            assert item.name.endswith(".jpg") and "…" in item.name
    # One page of items is as big as its bounded fields, not as the folder's depth.
    assert len(response.content) <= len(items) * (MAX_NAME_CHARS + MAX_PATH_CHARS + 1024)


LONG_ID = "1" + "L" * 1999


def _with_a_long_id(route_name: str) -> tuple[FakeFolder, dict[str, str]]:
    files: list[FakeFile | FakeFolder] = [
        FakeFile("first.jpg", image(600), "image/jpeg"),
        FakeFile("long-id.jpg", image(601), "image/jpeg", id=LONG_ID),
        FakeFile("last.jpg", image(602), "image/jpeg"),
    ]
    expected = {"first.jpg": "done", "long-id.jpg": "failed", "last.jpg": "done"}
    if route_name == "gdrive-api":
        # Drive lists a folder by its id: one too long to keep is not listed, with a reason.
        inside = FakeFile("inside.jpg", image(603), "image/jpeg")
        files.append(FakeFolder("long-id folder", [inside], id="2" + "F" * 1999))
        expected["long-id folder"] = "failed"
    return FakeFolder("Long ids", files), expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("route_name", "database"),
    [
        ("gdrive-api", "sqlite"),
        ("dropbox-api", "sqlite"),
        pytest.param("gdrive-api", "postgres", marks=pytest.mark.postgres),
        pytest.param("dropbox-api", "postgres", marks=pytest.mark.postgres),
    ],
)
def test_a_file_id_too_long_to_store_fails_that_file_only(
    route_name: str, database: str, request: pytest.FixtureRequest, make_settings: SettingsFactory
) -> None:
    database_url = (
        str(request.getfixturevalue("postgres_database")) if database == "postgres" else None
    )
    root, expected = _with_a_long_id(route_name)
    with serve_route(route_name, root) as route:
        settings = make_settings(database_url=database_url, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures", result.error
            items = items_by_path(runtime, result.import_id)
            assert {path: item.state for path, item in items.items()} == expected
            reason = items["long-id.jpg"].reason or ""
            assert reason.startswith("Not imported: its ") and "id is 2,00" in reason, reason
            assert f"more than the {MAX_ID_CHARS} accepted" in reason
            assert all(len(item.remote_id) <= MAX_ID_CHARS for item in items.values())
            if route_name == "gdrive-api":
                folder_reason = items["long-id folder"].reason or ""
                assert folder_reason.startswith("This folder was not listed"), folder_reason

            # A retry sends the refused items round again: they fail with the same reason,
            # without a request for them.
            queue = MemoryQueue()
            pool = WorkerPool(runtime, queue, 2)
            pool.start()
            try:
                assert Importer(runtime, queue).retry(result.import_id) == len(
                    [s for s in expected.values() if s == "failed"]
                )
                deadline = time.monotonic() + 60
                while queue.outstanding() and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                pool.stop()
            again = items_by_path(runtime, result.import_id)
            assert {path: item.state for path, item in again.items()} == expected
            assert again["long-id.jpg"].reason == reason
    downloads = [t for t in route.tap.seen if "alt=media" in t or "get_shared_link_file" in t]
    assert downloads and not [t for t in downloads if LONG_ID in t or "long-id.jpg" in t]


# -- links -------------------------------------------------------------------------------

_SETTINGS = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
LONG_DRIVE_LINK = "https://drive.google.com/drive/folders/" + "1" + "a" * 299
_DROPBOX_FOLDER = FakeFolder("x", [])
LONG_DROPBOX_LINK = (
    f"https://www.dropbox.com/scl/fo/{'a' * 300}/{link_key(_DROPBOX_FOLDER)}"
    f"?rlkey={rlkey(_DROPBOX_FOLDER)}&dl=0"
)


@pytest.mark.parametrize("url", [LONG_DRIVE_LINK, LONG_DROPBOX_LINK], ids=["drive", "dropbox"])
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_link_with_an_overlong_folder_id_is_refused_by_the_api(
    url: str, database: str, request: pytest.FixtureRequest, make_settings: SettingsFactory
) -> None:
    database_url = (
        str(request.getfixturevalue("postgres_database")) if database == "postgres" else None
    )
    settings = make_settings(database_url=database_url, allow_anonymous=True)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        response = client.post("/api/v1/imports", json={"url": url})
        assert response.status_code == 422, response.text[:500]
        body = response.json()
        assert body["type"].endswith("/invalid-url"), body
        assert "of 300 characters" in body["detail"] and "Traceback" not in response.text
        listed = client.get("/api/v1/imports").json()
    assert listed["items"] == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", [LONG_DRIVE_LINK, LONG_DROPBOX_LINK], ids=["drive", "dropbox"])
def test_a_link_with_an_overlong_folder_id_is_one_line_from_the_cli(
    url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS}
    # Nothing to reach: were the link taken, its listing would fail fast, not hang.
    nowhere = "http://127.0.0.1:9"
    env |= {
        "DATA_DIR": str(tmp_path / "data"),
        "GDRIVE_WEB_URL": nowhere,
        "GDRIVE_DOWNLOAD_URL": nowhere,
        "DROPBOX_WEB_URL": nowhere,
        "SOURCE_RETRY_ATTEMPTS": "1",
    }
    done = run_imageimport("import", url, env=env, cwd=tmp_path)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, (done.returncode, output[-2000:])
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("Error:") and "of 300 characters" in output, output
