"""/healthz, /readyz, /metrics, the page, and the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from imageimport.api import create_app
from imageimport.api.app import STATIC_DIR
from imageimport.settings import Settings
from tests.api.conftest import GOOD, assert_problem, import_folder, sqlite_only


@sqlite_only
def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_everything_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "queue": "ok", "store": "ok"},
    }


@sqlite_only
def test_readyz_names_an_unusable_store(
    api_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with TestClient(create_app(api_settings(objects_dir=blocker / "objects"))) as client:
        response = client.get("/readyz")
    problem = assert_problem(response, 503, "not-ready")
    assert problem["checks"]["database"] == "ok"
    assert problem["checks"]["queue"] == "ok"
    assert "cannot be created" in problem["checks"]["store"]
    assert problem["checks"]["store"] in problem["detail"]


@sqlite_only
def test_readyz_names_an_unreachable_database(api_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(api_settings())) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        working = runtime.engine
        # Nothing listens on port 1: every connection is refused.
        runtime.engine = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/nothing")
        try:
            response = client.get("/readyz")
        finally:
            runtime.engine.dispose()
            runtime.engine = working
        assert client.get("/readyz").status_code == 200
    problem = assert_problem(response, 503, "not-ready")
    assert problem["checks"]["database"] == "failed (OperationalError)."
    assert problem["checks"]["store"] == "ok"
    assert "nobody" not in response.text  # driver messages stay in the log


@sqlite_only
def test_readyz_checks_nats(
    api_settings: Callable[..., Settings], nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imageimport.api.routers import health

    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 1.0)
    settings = api_settings(nats_url=nats_server.url)
    with TestClient(create_app(settings, local_workers=False)) as client:
        assert client.get("/readyz").json()["checks"]["queue"] == "ok"
        if nats_server.external:
            return
        nats_server.stop()
        try:
            response = client.get("/readyz")
        finally:
            nats_server.start()
    problem = assert_problem(response, 503, "not-ready")
    assert problem["checks"]["queue"] != "ok"
    assert problem["checks"]["database"] == problem["checks"]["store"] == "ok"


@sqlite_only
@pytest.mark.timeout(90)
def test_readyz_says_at_once_that_nats_is_unreachable_and_recovers(
    api_settings: Callable[..., Settings], nats_server: Any
) -> None:
    if nats_server.external:
        pytest.skip("stops and starts the server")
    settings = api_settings(nats_url=nats_server.url, nats_connect_timeout_seconds=1)
    with TestClient(create_app(settings, local_workers=False)) as client:
        nats_server.stop()
        try:
            # Down for longer than the first connection's deadline: the API waits it out.
            time.sleep(2)
            deadline = time.monotonic() + 15
            while True:
                started = time.monotonic()
                response = client.get("/readyz")
                answered_in = time.monotonic() - started
                queue = response.json().get("checks", {}).get("queue")
                if queue != "ok" and "did not answer" not in queue:
                    break
                assert time.monotonic() < deadline, response.text
                time.sleep(0.1)
        finally:
            nats_server.start()
        problem = assert_problem(response, 503, "not-ready")
        assert queue == f"NATS at {nats_server.url} is unreachable (reconnecting)."
        assert answered_in < 1  # not the check's timeout, nor NATS's request timeout
        assert problem["checks"]["database"] == problem["checks"]["store"] == "ok"

        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the queue never became ready again"
            time.sleep(0.2)


@sqlite_only
def test_metrics_are_prometheus_text(client: TestClient) -> None:
    import_folder(client, GOOD)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert "python_info" in families


@sqlite_only
def test_the_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == (STATIC_DIR / "index.html").read_text()
    assets = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    response = client.get(f"/static/{assets[0].name}")
    assert response.status_code == 200 and response.content == assets[0].read_bytes()
    assert_problem(client.get("/static/no-such-file.js"), 404)
    assert_problem(client.get("/static/../settings.py"), 404)


@sqlite_only
def test_openapi_documents_every_route_with_problem_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/api/v1/imports",
        "/api/v1/imports/{import_id}",
        "/api/v1/imports/{import_id}/items",
        "/api/v1/imports/{import_id}/events",
        "/api/v1/imports/{import_id}/cancel",
        "/api/v1/imports/{import_id}/retry",
        "/api/v1/imports/{import_id}/sync",
        "/api/v1/images",
        "/api/v1/images/{image_id}",
        "/api/v1/images/{image_id}/content",
        "/api/v1/images/{image_id}/thumbnail",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    for operations in paths.values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert set(response["content"]) == {"application/problem+json"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200
