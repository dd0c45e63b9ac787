"""Secure by default (issue 14, row 7): a page on another site can neither reach the API
through DNS rebinding (unknown Host headers are refused) nor frame the page, and an API that
anyone may reach refuses changes unless a token is set or anonymous changes are allowed on
purpose. `imageimport serve` on loopback, the laptop quickstart, stays usable without a token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import SettingsFactory, serve_route
from tests.servers import free_port

FOLDER = FakeFolder(
    "Secure defaults",
    [
        FakeFile("one.png", make_image(32, 24, "PNG", seed=701), "image/png"),
        FakeFile("two.jpg", make_image(40, 30, "JPEG", seed=702), "image/jpeg"),
    ],
)
UUID = "00000000-0000-4000-8000-000000000000"
PROBLEM_BASE = "https://imageimport.dev/problems/"
FOREIGN_HOSTS = [
    "attacker.example",
    "attacker.example:8000",
    "localhost.attacker.example",
    "127.0.0.1.nip.io:8000",
    "localhostx",
    "[::2]:8000",
    "evil.example@localhost",
    "",
]
LOCAL_HOSTS = ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:8000", "[::1]:8000"]
# The web page, the API (reads, writes and a route that does not exist), the schema, the docs
# and the page's own files.
GUARDED = [
    ("GET", "/"),
    ("GET", "/api/v1/imports"),
    ("POST", "/api/v1/imports"),
    ("DELETE", "/api/v1/images/1"),
    ("GET", "/api/v1/nothing-here"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/static/app.js"),
]
PROBES = ["/healthz", "/readyz", "/metrics"]


@pytest.fixture
def app_settings(make_settings: SettingsFactory) -> Iterator[Callable[..., Settings]]:
    with serve_route("gdrive-api", FOLDER) as route:

        def build(**overrides: Any) -> Settings:
            return make_settings(**(route.settings | overrides))

        build.url = route.url  # type: ignore[attr-defined]
        yield build


def local_client(settings: Settings) -> TestClient:
    """A client addressing the app as a browser on this machine does."""
    return TestClient(create_app(settings), base_url="http://127.0.0.1:8000")


def assert_refused_host(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "untrusted-host"
    assert "ALLOWED_HOSTS" in problem["detail"]


def assert_no_framing(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers.get("x-frame-options") == "DENY", where
    policies = response.headers.get_list("content-security-policy")
    assert any("frame-ancestors 'none'" in policy for policy in policies), (where, policies)
    assert response.headers.get("x-content-type-options") == "nosniff", where


def write_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every POST and DELETE under /api/v1, read from the OpenAPI schema (so a new route
    cannot slip through), with its parameters filled in."""
    schema = client.get("/openapi.json").json()
    found = []
    for template, item in schema["paths"].items():
        if not template.startswith("/api/v1/"):
            continue
        for method in item:
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                path = template.replace("{import_id}", UUID).replace("{image_id}", "1")
                found.append((method.upper(), path))
    assert {m for m, _ in found} >= {"POST", "DELETE"} and len(found) >= 4, found
    return found


def read_operations(client: TestClient) -> list[str]:
    schema = client.get("/openapi.json").json()
    return [
        template.replace("{import_id}", UUID).replace("{image_id}", "1")
        for template, item in schema["paths"].items()
        if template.startswith("/api/v1/") and "get" in item and "events" not in template
    ]


# -- DNS rebinding ------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_on_the_page_and_the_api(
    app_settings: Callable[..., Settings],
) -> None:
    with local_client(app_settings(allow_anonymous=True)) as client:
        for host in FOREIGN_HOSTS:
            for method, path in GUARDED:
                response = client.request(method, path, headers={"Host": host}, json={"url": 5})
                assert_refused_host(response)
                assert_no_framing(response)
        # Nothing reached the application: no import was started.
        assert client.get("/api/v1/imports").json()["items"] == []
        for host in LOCAL_HOSTS:
            assert client.get("/", headers={"Host": host}).status_code == 200, host
        # Probes and metrics answer kubelets and load balancers, which address pods by IP.
        for path in PROBES:
            response = client.get(path, headers={"Host": "10.244.1.7:8000"})
            assert response.status_code == 200, (path, response.text)


def test_allowed_hosts_replace_the_local_names(app_settings: Callable[..., Settings]) -> None:
    settings = app_settings(allowed_hosts=["Photos.Example", "*.lan.example"])
    with local_client(settings) as client:
        for host in ("photos.example", "photos.example:443", "nas.lan.example", "a.b.lan.example"):
            assert client.get("/", headers={"Host": host}).status_code == 200, host
        for host in ("lan.example", "localhost", "127.0.0.1", "photos.example.attacker.example"):
            assert_refused_host(client.get("/api/v1/imports", headers={"Host": host}))


# -- framing ------------------------------------------------------------------------------------


def test_no_answer_may_be_framed(app_settings: Callable[..., Settings]) -> None:
    with local_client(app_settings(allow_anonymous=True)) as client:
        created = client.post("/api/v1/imports", json={"url": app_settings.url})  # type: ignore[attr-defined]
        assert created.status_code == 202, created.text
        deadline = time.monotonic() + 60
        while client.get(created.headers["location"]).json()["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        image = client.get("/api/v1/images").json()["items"][0]
        page = client.get("/")
        assert page.status_code == 200
        answers = [
            page,
            created,
            client.get("/api/v1/imports"),
            client.get(image["links"]["content"]),  # sets its own policy (sandbox)
            client.get(image["links"]["thumbnail"]),
            client.get("/api/v1/images/999"),  # a problem
            client.get("/static/app.js"),
            client.get("/docs"),
            client.get("/healthz"),
            client.get("/", headers={"Host": "attacker.example"}),  # a refusal
        ]
        for response in answers:
            assert_no_framing(response)
        # The page runs only its own scripts and styles, and sends no referrer.
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["referrer-policy"] == "no-referrer"


# -- changes without a token ---------------------------------------------------------------------


def test_without_a_token_changes_are_refused_unless_anonymous_is_allowed(
    app_settings: Callable[..., Settings],
) -> None:
    # The default, and ALLOW_ANONYMOUS=false said outright: reads answer, changes do not.
    for settings in (app_settings(), app_settings(allow_anonymous=False)):
        with local_client(settings) as client:
            writes = write_operations(client)
            for method, path in writes:
                response = client.request(method, path, json={"url": app_settings.url})  # type: ignore[attr-defined]
                assert response.status_code == 403, (method, path, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                problem = response.json()
                assert problem["type"] == PROBLEM_BASE + "token-required"
                assert (
                    "API_TOKEN" in problem["detail"] and "ALLOW_ANONYMOUS=true" in problem["detail"]
                )
                assert "www-authenticate" not in response.headers  # no token would help
            for path in read_operations(client):
                assert client.get(path).status_code != 403, path
            assert client.get("/api/v1/imports").json()["items"] == []
            # The schema says so.
            schema = client.get("/openapi.json").json()
            for method, path in writes:
                template = next(
                    t
                    for t in schema["paths"]
                    if t.replace("{import_id}", UUID).replace("{image_id}", "1") == path
                )
                assert "403" in schema["paths"][template][method.lower()]["responses"]

    # ALLOW_ANONYMOUS=true: the same changes go through (to their own answers).
    with local_client(app_settings(allow_anonymous=True)) as client:
        for method, path in write_operations(client):
            response = client.request(method, path, json={"url": app_settings.url})  # type: ignore[attr-defined]
            assert response.status_code != 403, (method, path, response.text)
        assert len(client.get("/api/v1/imports").json()["items"]) == 1


# -- the commands ---------------------------------------------------------------------------------


@dataclass
class Running:
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _clean_env() -> dict[str, str]:
    names = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
    return {k: v for k, v in os.environ.items() if k.upper() not in names}


@contextlib.contextmanager
def running(tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[Running]:
    """`imageimport ARGS --port P` as its own process, until it answers /healthz."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp_path / f"{args[0]}-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageimport", *args, "--port", str(port)],
            cwd=tmp_path,
            env=_clean_env() | {"DATA_DIR": str(tmp_path / "data")} | env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Running(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"{args} exited:\n{server.output()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{args} did not start:\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


NO_TOKEN_WARNING = "API_TOKEN is not set: the API refuses every change"


def _refuses_changes(server: Running, url: str) -> None:
    refused = httpx.post(f"{server.base}/api/v1/imports", json={"url": url}, timeout=10)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == PROBLEM_BASE + "token-required"
    assert httpx.get(f"{server.base}/api/v1/imports", timeout=10).json()["items"] == []


@pytest.mark.nats
@pytest.mark.timeout(180)
def test_the_api_command_without_a_token_warns_and_refuses_changes(
    tmp_path: Path, nats_server: Any
) -> None:
    with serve_route("gdrive-api", FOLDER) as route:
        env = route.env | {"NATS_URL": nats_server.url}
        with running(tmp_path, "api", "--host", "127.0.0.1", env=env) as server:
            output = server.output()
            assert NO_TOKEN_WARNING in output and "ALLOW_ANONYMOUS=true" in output, output
            _refuses_changes(server, route.url)
            rebound = httpx.get(
                f"{server.base}/api/v1/imports", headers={"Host": "attacker.example"}, timeout=10
            )
            assert_refused_host(rebound)


@pytest.mark.timeout(180)
def test_serve_needs_no_token_on_loopback_only(tmp_path: Path) -> None:
    with serve_route("gdrive-api", FOLDER) as route:
        # The laptop quickstart: loopback, no token, no warning, imports start.
        with running(tmp_path / "loopback", "serve", env=route.env) as server:
            created = httpx.post(
                f"{server.base}/api/v1/imports", json={"url": route.url}, timeout=10
            )
            assert created.status_code == 202, created.text
            assert NO_TOKEN_WARNING not in server.output()

        # Every interface: the same as `imageimport api`.
        with running(tmp_path / "public", "serve", "--host", "0.0.0.0", env=route.env) as server:
            assert NO_TOKEN_WARNING in server.output(), server.output()
            _refuses_changes(server, route.url)

        # Every interface with ALLOW_ANONYMOUS=true: changes, and a warning that says so.
        env = route.env | {"ALLOW_ANONYMOUS": "true"}
        with running(tmp_path / "open", "serve", "--host", "0.0.0.0", env=env) as server:
            assert "anyone who can reach 0.0.0.0:" in server.output(), server.output()
            created = httpx.post(
                f"{server.base}/api/v1/imports", json={"url": route.url}, timeout=10
            )
            assert created.status_code == 202, created.text
