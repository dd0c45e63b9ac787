"""An API app per test, on SQLite and on PostgreSQL, importing from the fake Google Drive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image, sample_folder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import FaultPlan, RunningServer
from tests.pipeline.routes import API_KEY

SAMPLE, EXPECTED = sample_folder()
# Three distinct images, nothing else: an import that succeeds.
GOOD = FakeFolder(
    "Good photos",
    [
        FakeFile("one.png", make_image(40, 30, "PNG", seed=101), "image/png"),
        FakeFile("two.jpg", make_image(50, 20, "JPEG", seed=102), "image/jpeg"),
        FakeFile("three.webp", make_image(24, 24, "WEBP", seed=103), "image/webp"),
    ],
)
BIG = big_folder(25, seed=7, name="api-big")
# Drive answers "not found" for a folder that is not shared: the import fails.
PRIVATE = FakeFolder(
    "Private", [FakeFile("secret.png", make_image(8, 8, "PNG", seed=104))], public=False
)

# For tests where the database plays no part (validation, auth, probes, the page): SQLite
# only, which keeps the suite fast. Everything that reads or writes rows runs on both.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

TERMINAL = {"succeeded", "completed_with_failures", "failed", "cancelled"}
# Starlette's TestClient sends `Host: testserver`, which the default ALLOWED_HOSTS (localhost
# names) refuses like any other name: apps under a TestClient allow it explicitly.
TEST_CLIENT_HOSTS = ["localhost", "127.0.0.1", "::1", "testserver"]
PROBLEM_TYPE = "application/problem+json"


@dataclass
class Drive:
    """The fake Drive API serving every test folder."""

    server: RunningServer
    faults: FaultPlan
    settings: dict[str, Any]

    @staticmethod
    def url(folder: FakeFolder) -> str:
        return f"https://drive.google.com/drive/folders/{folder.id}?usp=sharing"


@contextmanager
def running_drive(faults: FaultPlan | None = None) -> Iterator[Drive]:
    faults = faults or FaultPlan()
    app = make_gdrive_app([SAMPLE, GOOD, BIG, PRIVATE], api_key=API_KEY)
    with RunningServer(app, faults) as server:
        settings = {
            "gdrive_api_url": server.url,
            "gdrive_web_url": server.url,
            "gdrive_download_url": server.url,
            "google_api_key": API_KEY,
        }
        yield Drive(server, faults, settings)


@pytest.fixture(scope="session")
def drive() -> Iterator[Drive]:
    with running_drive() as running:
        yield running


@pytest.fixture
def api_settings(
    database_url: str, make_settings: Callable[..., Settings], drive: Drive
) -> Callable[..., Settings]:
    """Settings for this test's database and the fake Drive; keyword arguments override.
    Anonymous changes are allowed, as `imageimport serve` allows them on loopback."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "allowed_hosts": TEST_CLIENT_HOSTS,
            "allow_anonymous": True,
            "database_url": database_url,
            "max_file_size_bytes": EXPECTED.oversized_bytes,
            "source_retry_attempts": 2,
            **drive.settings,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def client(api_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings())) as test_client:
        yield test_client


# -- helpers ------------------------------------------------------------------------------------


def start_import(client: TestClient | httpx.Client, folder: FakeFolder) -> dict[str, Any]:
    response = client.post("/api/v1/imports", json={"url": Drive.url(folder)})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for(
    client: TestClient | httpx.Client,
    import_id: str,
    states: set[str] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll GET /imports/{id} until the import is in one of `states` (default: finished)."""
    wanted = states or TERMINAL
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/imports/{import_id}")
        assert response.status_code == 200, response.text
        body = dict(response.json())
        if body["state"] in wanted:
            return body
        assert time.monotonic() < deadline, f"import still {body['state']}: {body}"
        time.sleep(0.05)


def import_folder(client: TestClient | httpx.Client, folder: FakeFolder) -> dict[str, Any]:
    return wait_for(client, start_import(client, folder)["id"])


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict:
    """An RFC 9457 problem with this status (and type slug), never leaking a traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_TYPE)
    body = response.json()
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"].endswith((".", ")"))
    assert "Traceback" not in response.text
    if slug is None:
        assert body["type"] == "about:blank"
    else:
        assert body["type"] == f"https://imageimport.dev/problems/{slug}"
    return dict(body)


def iter_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) pairs as they arrive, comments as ("comment", text), up to and
    including `event: end`."""
    name, data = "message", ""
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif line == "" and data:
            yield name, data
            if name == "end":
                return
            name, data = "message", ""


def read_events(lines: Iterator[str]) -> list[tuple[str, str]]:
    return list(iter_events(lines))
