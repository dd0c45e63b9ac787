"""/api/v1/imports: start, list, read, items, events, cancel and retry, against real imports
from the fake Drive, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import fastapi.routing
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.api.deps import get_starter
from imageimport.api.routers import imports as imports_router
from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.registry import parse_folder_url
from tests.api.conftest import (
    GOOD,
    PRIVATE,
    SAMPLE,
    TERMINAL,
    Drive,
    assert_problem,
    import_folder,
    iter_events,
    read_events,
    running_drive,
    sqlite_only,
    start_import,
    wait_for,
)
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import Fault, FaultPlan, RunningServer
from tests.pipeline.routes import API_KEY

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_an_import_runs_to_the_end_and_reports_progress(client: TestClient) -> None:
    response = client.post("/api/v1/imports", json={"url": Drive.url(SAMPLE), "options": {}})
    assert response.status_code == 202
    started = response.json()
    assert response.headers["location"] == f"/api/v1/imports/{started['id']}"
    assert started["provider"] == "gdrive"
    assert started["url"].startswith("https://drive.google.com/drive/folders/")
    assert started["state"] in ("pending", "listing", "importing")
    assert started["links"] == {
        "self": f"/api/v1/imports/{started['id']}",
        "items": f"/api/v1/imports/{started['id']}/items",
        "events": f"/api/v1/imports/{started['id']}/events",
    }

    final = wait_for(client, started["id"])
    assert final["state"] == "completed_with_failures", final
    assert final["error"] is None
    assert final["counters"] == {
        "discovered": 13,
        "pending": 0,
        "imported": 8,
        "duplicates": 1,
        "unchanged": 0,
        "skipped": 2,
        "failed": 2,
        "cancelled": 0,
        "gone": 0,
        "bytes": final["counters"]["bytes"],
    }
    assert final["counters"]["bytes"] > 0
    assert final["progress"] == 1.0
    assert final["rate"]["files_per_second"] > 0
    assert final["rate"]["bytes_per_second"] > 0
    assert final["current_file"] in {path for path, _ in SAMPLE.files()}
    for stamp in ("created_at", "started_at", "finished_at"):
        assert final[stamp].endswith(("Z", "+00:00")), stamp
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]

    # Once finished, the rate no longer moves with the clock.
    time.sleep(0.05)
    assert client.get(f"/api/v1/imports/{started['id']}").json()["rate"] == final["rate"]


def test_imports_are_listed_newest_first_page_by_page(client: TestClient) -> None:
    ids = [import_folder(client, GOOD)["id"] for _ in range(3)]
    first = client.get("/api/v1/imports", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [i["id"] for i in page["items"]] == ids[::-1][:2]
    assert page["items"][0]["counters"]["discovered"] == 3
    assert page["items"][0]["current_file"] is None  # only single reads look it up
    assert page["next_cursor"]

    second = client.get("/api/v1/imports", params={"limit": 2, "cursor": page["next_cursor"]})
    assert second.status_code == 200
    rest = second.json()
    assert [i["id"] for i in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None

    everything = client.get("/api/v1/imports").json()
    assert [i["id"] for i in everything["items"]] == ids[::-1]
    # The first import stored the images; the later ones found them unchanged.
    assert [i["counters"]["imported"] for i in everything["items"]] == [0, 0, 3]
    assert [i["state"] for i in everything["items"]] == ["succeeded"] * 3


def test_items_can_be_filtered_and_paged(client: TestClient) -> None:
    done = import_folder(client, SAMPLE)
    base = f"/api/v1/imports/{done['id']}/items"

    failed = client.get(base, params={"state": "failed"}).json()
    assert {i["path"] for i in failed["items"]} == {"broken.jpg", "huge.jpg"}
    assert all(i["state"] == "failed" and i["reason"] for i in failed["items"])
    assert all(i["image_id"] is None for i in failed["items"])
    assert failed["next_cursor"] is None

    skipped = client.get(base, params={"state": "skipped"}).json()["items"]
    assert {i["path"] for i in skipped} == {"notes.txt", "not-really.jpg"}
    stored = client.get(base, params={"state": "done"}).json()["items"]
    assert len(stored) == 8 and all(isinstance(i["image_id"], int) for i in stored)

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = client.get(base, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 5
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(set(seen)) == 13
    paths = {i["path"] for i in client.get(base, params={"limit": 1000}).json()["items"]}
    assert paths == {path for path, _ in SAMPLE.files()}


def test_a_bad_item_state_or_limit_is_a_validation_problem(client: TestClient) -> None:
    done = import_folder(client, GOOD)
    base = f"/api/v1/imports/{done['id']}/items"
    response = client.get(base, params={"state": "exploded"})
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == "state"
    assert_problem(client.get(base, params={"limit": 0}), 422, "validation-error")
    assert_problem(client.get(base, params={"limit": 1001}), 422, "validation-error")
    assert_problem(client.get("/api/v1/imports", params={"limit": 101}), 422, "validation-error")
    assert_problem(client.get("/api/v1/imports", params={"limit": "x"}), 422, "validation-error")


def test_a_listing_that_fails_says_why(client: TestClient) -> None:
    final = import_folder(client, PRIVATE)
    assert final["state"] == "failed"
    assert final["error"] and final["error"].endswith(".")
    assert final["counters"]["discovered"] == 0
    assert final["progress"] == 1.0


def test_bad_links_are_refused_with_the_reason(client: TestClient) -> None:
    bad = "https://example.com/not/a/folder"
    with pytest.raises(InvalidSourceURL) as expected:
        parse_folder_url(bad)
    problem = assert_problem(client.post("/api/v1/imports", json={"url": bad}), 422, "invalid-url")
    assert problem["detail"] == str(expected.value)
    assert problem["errors"] == [{"field": "url", "message": str(expected.value)}]

    too_long = "https://drive.google.com/drive/folders/" + "a" * 2100
    problem = assert_problem(
        client.post("/api/v1/imports", json={"url": too_long}), 422, "invalid-url"
    )
    assert "2048" in problem["detail"]
    assert client.get("/api/v1/imports").json()["items"] == []


@sqlite_only
def test_links_that_do_not_even_parse_as_urls_are_refused(client: TestClient) -> None:
    # urlsplit raises ValueError on these; the API must still answer with the reason.
    for bad in ("http://[::1", "[X", "https://[dropbox.com/scl/fo/a/b"):
        response = client.post("/api/v1/imports", json={"url": bad})
        assert_problem(response, 422, "invalid-url")


@sqlite_only
def test_malformed_bodies_are_validation_problems(client: TestClient) -> None:
    for body, field in [
        ({}, "url"),
        ({"url": 5}, "url"),
        ({"url": Drive.url(GOOD), "options": []}, "options"),
        ({"url": Drive.url(GOOD), "surprise": 1}, "surprise"),
        ([], "body"),
        ("just a string", "body"),
    ]:
        response = client.post("/api/v1/imports", json=body)
        problem = assert_problem(response, 422, "validation-error")
        assert field in {error["field"] for error in problem["errors"]}, (body, problem)
    assert client.get("/api/v1/imports").json()["items"] == []


@sqlite_only
def test_bodies_that_are_not_json_or_too_large_are_refused(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    problem = assert_problem(
        client.post("/api/v1/imports", content=b"{not json", headers=headers),
        422,
        "validation-error",
    )
    assert problem["errors"] == [{"field": "body", "message": "The body is not valid JSON."}]

    huge = json.dumps({"url": Drive.url(GOOD), "options": {"x": "y" * 70_000}}).encode()
    assert_problem(
        client.post("/api/v1/imports", content=huge, headers=headers), 413, "content-too-large"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while reading
        yield huge[:40_000]
        yield huge[40_000:]

    problem = assert_problem(
        client.post("/api/v1/imports", content=chunks(), headers=headers),
        413,
        "content-too-large",
    )
    assert problem["detail"] == "The request body is larger than the limit of 64 KiB."
    assert client.get("/api/v1/imports").json()["items"] == []


def test_unknown_imports_are_404_problems(client: TestClient) -> None:
    for import_id in (UNKNOWN, UNKNOWN.upper(), "not-a-uuid", "1" * 300, "%00", "%F0%9F%92%A5"):
        base = f"/api/v1/imports/{import_id}"
        for response in (
            client.get(base),
            client.get(f"{base}/items"),
            client.get(f"{base}/events"),
            client.post(f"{base}/cancel"),
            client.post(f"{base}/retry"),
        ):
            assert_problem(response, 404, "not-found")


@sqlite_only
def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404)
    response = client.delete("/api/v1/imports")
    problem = assert_problem(response, 405)
    assert problem["detail"] == "DELETE is not allowed on /api/v1/imports; use GET, POST."
    assert response.headers["allow"] == "GET, POST"
    response = client.put(f"/api/v1/imports/{UNKNOWN}/cancel")
    assert_problem(response, 405)
    assert response.headers["allow"] == "POST"


@sqlite_only
def test_unexpected_errors_are_500_problems_without_internals(
    api_settings: Callable[..., Settings],
) -> None:
    def broken_starter() -> Callable[[str, dict[str, Any]], str]:
        def start(url: str, options: dict[str, Any]) -> str:
            raise RuntimeError("password=hunter2 at /srv/secret/path")

        return start

    app = create_app(api_settings())
    app.dependency_overrides[get_starter] = broken_starter
    with TestClient(app) as client:
        response = client.post("/api/v1/imports", json={"url": Drive.url(GOOD)})
    problem = assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert problem["title"] == "Internal server error"


def test_cancel_settles_every_waiting_file(api_settings: Callable[..., Settings]) -> None:
    # Without workers nothing is processed, so the import waits in "importing" for us.
    with TestClient(create_app(api_settings(), local_workers=False)) as client:
        started = start_import(client, SAMPLE)
        waiting = wait_for(client, started["id"], {"importing"})
        assert waiting["counters"]["pending"] == 13
        assert waiting["progress"] == 0.0
        response = client.post(f"/api/v1/imports/{started['id']}/retry")
        assert_problem(response, 409, "nothing-to-retry")

        response = client.post(f"/api/v1/imports/{started['id']}/cancel")
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["state"] == "cancelled"
        assert cancelled["finished_at"] is not None
        assert cancelled["counters"]["cancelled"] == 13
        assert cancelled["counters"]["pending"] == 0
        assert cancelled["progress"] == 1.0
        items = client.get(f"/api/v1/imports/{started['id']}/items", params={"state": "cancelled"})
        assert len(items.json()["items"]) == 13

        again = client.post(f"/api/v1/imports/{started['id']}/cancel")
        problem = assert_problem(again, 409, "import-finished")
        assert problem["state"] == "cancelled"
        problem = assert_problem(
            client.post(f"/api/v1/imports/{started['id']}/retry"), 409, "nothing-to-retry"
        )
        assert "cancelled" in problem["detail"]


def test_retry_sends_failed_files_round_again(client: TestClient) -> None:
    first = import_folder(client, SAMPLE)
    response = client.post(f"/api/v1/imports/{first['id']}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["state"] in ("importing", "completed_with_failures")
    again = wait_for(client, first["id"])
    # The same two files fail for the same reasons; nothing else is touched.
    assert again["state"] == "completed_with_failures"
    assert again["counters"]["failed"] == 2
    assert again["counters"]["imported"] == 8
    assert again["finished_at"] is not None

    good = import_folder(client, GOOD)
    response = client.post(f"/api/v1/imports/{good['id']}/retry")
    problem = assert_problem(response, 409, "nothing-to-retry")
    assert problem["state"] == "succeeded"
    assert_problem(client.post(f"/api/v1/imports/{good['id']}/cancel"), 409, "import-finished")


def test_posting_a_folder_again_downloads_only_what_changed_and_retry_keeps_it_so(
    api_settings: Callable[..., Settings],
) -> None:
    broken = make_image(30, 30, "JPEG", seed=906)
    folder = FakeFolder(
        "Growing",
        [
            FakeFile("one.png", make_image(40, 30, "PNG", seed=901), "image/png"),
            FakeFile("two.jpg", make_image(50, 20, "JPEG", seed=902), "image/jpeg"),
            FakeFile("three.webp", make_image(24, 24, "WEBP", seed=903), "image/webp"),
            FakeFile("broken.jpg", broken[: len(broken) // 3], "image/jpeg"),
        ],
    )
    files = dict(folder.files())
    with RunningServer(make_gdrive_app([folder], api_key=API_KEY)) as server:
        fake = server.app.app.state.drive  # type: ignore[attr-defined]
        settings = api_settings(
            gdrive_api_url=server.url, gdrive_web_url=server.url, gdrive_download_url=server.url
        )

        def downloads() -> list[str]:
            fetched = [r.path for r in fake.requests if r.params.get("alt") == "media"]
            by_id = {file.id: path for path, file in folder.files()}
            return [by_id[path.rpartition("/")[2]] for path in fetched]

        with TestClient(create_app(settings)) as client:
            first = import_folder(client, folder)
            assert first["counters"]["imported"] == 3 and first["counters"]["failed"] == 1
            before = len(downloads())
            files["two.jpg"].overwrite(make_image(51, 20, "JPEG", seed=907))
            fake.add(folder, FakeFile("four.png", make_image(20, 20, "PNG", seed=908)))

            second = import_folder(client, folder)
            assert second["state"] == "completed_with_failures", second
            counters = second["counters"]
            assert (counters["discovered"], counters["imported"], counters["duplicates"]) == (
                5,
                2,
                0,
            )
            assert (counters["unchanged"], counters["failed"]) == (2, 1)
            # The changed file, the new one, and the one that failed: nothing else.
            assert sorted(downloads()[before:]) == ["broken.jpg", "four.png", "two.jpg"]

            items = f"/api/v1/imports/{second['id']}/items"
            unchanged = client.get(items, params={"state": "unchanged"}).json()["items"]
            assert {i["path"] for i in unchanged} == {"one.png", "three.webp"}
            stored = client.get(f"/api/v1/imports/{first['id']}/items").json()["items"]
            image_of = {i["path"]: i["image_id"] for i in stored}
            assert all(i["image_id"] == image_of[i["path"]] for i in unchanged)
            # The images the import found include the unchanged files' (the page's filter).
            found = client.get("/api/v1/images", params={"import_id": second["id"]}).json()
            assert {i["path"] for i in found["items"]} == {
                "one.png",
                "two.jpg",
                "three.webp",
                "four.png",
            }

            # A retry sends the failed file round again, and only it.
            before = len(downloads())
            response = client.post(f"/api/v1/imports/{second['id']}/retry")
            assert response.status_code == 202, response.text
            again = wait_for(client, second["id"])
            assert downloads()[before:] == ["broken.jpg"]
            assert again["counters"] == {**counters, "bytes": again["counters"]["bytes"]}


def test_retry_of_a_failed_listing_lists_again(client: TestClient) -> None:
    failed = import_folder(client, PRIVATE)
    response = client.post(f"/api/v1/imports/{failed['id']}/retry")
    assert response.status_code == 202, response.text
    again = wait_for(client, failed["id"])
    assert again["state"] == "failed" and again["error"]


@pytest.mark.timeout(60)  # the stream only ends with the import
def test_events_stream_progress_then_the_final_state(client: TestClient) -> None:
    started = start_import(client, SAMPLE)
    with client.stream("GET", f"/api/v1/imports/{started['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = read_events(response.iter_lines())
    names = [name for name, _ in events if name != "comment"]
    assert names[0] == "progress" and names[-1] == "end"
    assert set(names[:-1]) == {"progress"}
    final = json.loads(events[-1][1])
    assert final["state"] == "completed_with_failures"
    assert final["counters"]["pending"] == 0 and final["counters"]["imported"] == 8
    assert final == {**wait_for(client, started["id"]), "rate": final["rate"]}

    # A finished import: its state once, then the end.
    with client.stream("GET", f"/api/v1/imports/{started['id']}/events") as response:
        events = read_events(response.iter_lines())
    assert [name for name, _ in events] == ["progress", "end"]


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn server, so event streams arrive as they are sent."""
    config = uvicorn.Config(create_app(settings), port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@sqlite_only
@pytest.mark.timeout(60)
def test_events_arrive_live_with_keep_alives(
    api_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports_router, "POLL_SECONDS", 0.05)
    # FastAPI's keep-alive interval, private but meant for tests to change.
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.2)
    # The first listing request takes a while: a quiet spell with nothing to report.
    faults = FaultPlan([Fault("slow", path="/drive/v3/files", times=1, delay=0.8)])
    with (
        running_drive(faults) as slow,
        serving(api_settings(**slow.settings)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        started = start_import(http, GOOD)
        arrivals: list[tuple[float, str, str]] = []
        with http.stream("GET", f"/api/v1/imports/{started['id']}/events") as response:
            assert response.status_code == 200
            for name, data in iter_events(response.iter_lines()):
                arrivals.append((time.monotonic(), name, data))
        final = wait_for(http, started["id"])
    names = [name for _, name, _ in arrivals]
    assert names[0] == "progress" and names[-1] == "end"
    assert "comment" in names, "no keep-alive during the quiet listing"
    assert all(data == "ping" for _, name, data in arrivals if name == "comment")
    first = json.loads(arrivals[0][2])
    assert first["state"] not in TERMINAL and first["progress"] is None
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # streamed, not sent in one piece at the end
    states = [json.loads(data)["state"] for _, name, data in arrivals if name != "comment"]
    assert states[-1] == final["state"] == "succeeded"
    assert json.loads(arrivals[-1][2])["counters"]["imported"] == 3
