"""Hostile API input, beyond what tests/api covers: schemathesis over the whole schema with
many more examples, every query value oversized, every route behind the token (found from
the schema, so a new route cannot slip through), the token compared in constant time, and
cursors that are validly signed yet carry hostile positions."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from imageimport.api import create_app
from imageimport.api.pagination import Cursors, cursor_key
from imageimport.settings import Settings
from tests.api.conftest import TEST_CLIENT_HOSTS
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import SettingsFactory, serve_route

TOKEN = "hostile-input-token-5d1c"
FOLDER = FakeFolder(
    "Api", [FakeFile(f"{n}.png", make_image(20, 20, "PNG", seed=500 + n)) for n in range(3)]
)
UUID = "00000000-0000-4000-8000-000000000000"
OPEN_TAGS = {"health"}  # probes and metrics answer without the token, by design


@pytest.fixture
def app_settings(make_settings: SettingsFactory) -> Iterator[Callable[..., Settings]]:
    with serve_route("gdrive-api", FOLDER) as route:

        def build(**overrides: Any) -> Settings:
            values = {
                "api_token": TOKEN,
                "allowed_hosts": TEST_CLIENT_HOSTS,
                "source_retry_attempts": 1,
                **route.settings,
            }
            return make_settings(**(values | overrides))

        build.url = route.url  # type: ignore[attr-defined]
        yield build


@pytest.fixture
def client(app_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings())) as test_client:
        test_client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield test_client


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with its parameters filled in, operation) for every documented route."""
    schema = client.get("/openapi.json").json()
    found = []
    for template, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            path = template.replace("{import_id}", UUID).replace("{image_id}", "1")
            assert "{" not in path, f"fill in the parameter of {template}"
            found.append((method.upper(), path, operation))
    return found


def without_lifespan(app: Any) -> Callable[..., Any]:
    """The app minus its lifespan (the fixture runs that once, in a TestClient)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("the test runs the lifespan itself")
        await app(scope, receive, send)

    return asgi


# -- the token -------------------------------------------------------------------------------


def test_every_documented_route_but_health_needs_the_token(client: TestClient) -> None:
    operations = _operations(client)
    protected = [(m, p) for m, p, op in operations if not OPEN_TAGS & set(op.get("tags", []))]
    assert len(protected) >= 12  # the whole API, not an empty schema
    for method, path in protected:
        for header in (
            None,
            "",
            "Bearer",
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN}\x00",
            "x" * 9000,
        ):
            headers = {"Authorization": header} if header is not None else {}
            client.headers.pop("Authorization", None)
            response = client.request(method, path, headers=headers, json={"url": 1})
            assert response.status_code == 401, (method, path, header, response.text)
            assert TOKEN not in response.text
    for method, path, op in operations:
        if OPEN_TAGS & set(op.get("tags", [])):
            client.headers.pop("Authorization", None)
            assert client.request(method, path).status_code in (200, 503), path


def test_the_token_is_compared_in_constant_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def spy(a: bytes | str, b: bytes | str) -> bool:
        compared.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    for presented in ("wrong", TOKEN[:-1], TOKEN):
        client.headers["Authorization"] = f"Bearer {presented}"
        client.get("/api/v1/imports")
    expected = TOKEN.encode()
    calls = [pair for pair in compared if expected in (pair[0], pair[1])]
    # Each presented token went through compare_digest against the configured one.
    assert [a if b == expected else b for a, b in calls] == [
        b"wrong",
        TOKEN[:-1].encode(),
        expected,
    ]


# -- oversized and malformed input -----------------------------------------------------------


def test_oversized_query_values_are_refused(client: TestClient) -> None:
    checked = 0
    for method, path, operation in _operations(client):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query":
                continue
            kind = parameter.get("schema", {})
            types = {kind.get("type")} | {a.get("type") for a in kind.get("anyOf", [])}
            value = str(10**40) if "integer" in types else "9" * 20_000
            response = client.request(method, path, params={parameter["name"]: value})
            assert 400 <= response.status_code < 500, (path, parameter["name"], response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30_000 + b"]" * 30_000,  # nesting deep enough to exhaust a recursive parser
        b'{"url": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"url": "' + b"a" * 60_000 + b'"}',
        b'{"url": "\\ud800"}',
        b'{"url": "https://drive.google.com/drive/folders/x\\u0000y"}',
        b'{"url": "https://drive.google.com@evil.example/drive/folders/1AbCdEfGhIjKlMnOpQrS"}',
        b'{"url": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrS", "options": '
        + b'{"a": ' * 5_000
        + b"1"
        + b"}" * 5_000
        + b"}",
        b"\xff\xfe\x00garbage",
    ],
)
def test_hostile_bodies_are_clean_4xx_problems(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/api/v1/imports", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    assert client.get("/api/v1/imports").json()["items"] == []


# -- cursors ---------------------------------------------------------------------------------


def test_signed_cursors_with_hostile_positions_are_refused(
    client: TestClient, app_settings: Callable[..., Settings]
) -> None:
    """Even with the signing key (a leaked API_TOKEN and DATABASE_URL), a cursor can only
    ever be a well-typed position: anything else is a 400, never a query or a 500."""
    forge = Cursors(cursor_key(app_settings()))
    hostile: list[Any] = [
        {"id": "1 OR 1=1"},
        {"id": -1},
        {"id": 0},
        {"id": 2**70},
        {"id": True},
        {"id": 1.5},
        {"id": None},
        {"id": [1]},
        {"at": "2024-01-01T00:00:00", "id": "'; DROP TABLE imports; --"},
        {"at": "9" * 30, "id": UUID},
        {"at": "+999999-01-01T00:00:00", "id": UUID},
        {"at": {"$gt": ""}, "id": UUID},
        {},
    ]
    for position in hostile:
        for kind, path in (("images", "/api/v1/images"), ("imports", "/api/v1/imports")):
            token = forge.encode(kind, position, {})
            if len(token) > 512:
                continue
            response = client.get(path, params={"cursor": token})
            assert response.status_code == 400, (position, response.text)
            assert "invalid-cursor" in response.json()["type"]
    # A genuine cursor from a server with another token is refused too.
    other = Cursors(cursor_key(app_settings(api_token="another-token")))
    response = client.get(
        "/api/v1/images", params={"cursor": other.encode("images", {"id": 5}, {})}
    )
    assert response.status_code == 400
    assert client.get("/api/v1/imports").status_code == 200  # the tables are still there


# -- schemathesis with many examples ---------------------------------------------------------


@pytest.fixture
def hostile_schema(app_settings: Callable[..., Settings]) -> Iterator[Any]:
    app = create_app(app_settings())
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", without_lifespan(app))
        schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
        schema.config.generation.update(max_examples=80, modes=["positive", "negative"])
        yield schema


schema = schemathesis.pytest.from_fixture("hostile_schema")


@pytest.mark.timeout(120)
@schema.parametrize()
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_many_generated_requests_never_get_a_5xx(case: Any) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
