"""API_TOKEN: every /api/v1 route needs the bearer token; probes, metrics and the page do not.
Also CORS, which must put its headers on refusals too."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.settings import Settings
from tests.api.conftest import GOOD, Drive, assert_problem, sqlite_only, wait_for

TOKEN = "correct-horse-battery-staple"
ORIGIN = "http://page.example"


@pytest.fixture
def guarded(api_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = api_settings(api_token=TOKEN, cors_origins=[ORIGIN])
    with TestClient(create_app(settings)) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


API_CALLS = [
    ("GET", "/api/v1/imports"),
    ("POST", "/api/v1/imports"),
    ("GET", "/api/v1/imports/00000000-0000-4000-8000-000000000000"),
    ("GET", "/api/v1/imports/00000000-0000-4000-8000-000000000000/items"),
    ("GET", "/api/v1/imports/00000000-0000-4000-8000-000000000000/events"),
    ("POST", "/api/v1/imports/00000000-0000-4000-8000-000000000000/cancel"),
    ("POST", "/api/v1/imports/00000000-0000-4000-8000-000000000000/retry"),
    ("POST", "/api/v1/imports/00000000-0000-4000-8000-000000000000/sync"),
    ("GET", "/api/v1/images"),
    ("GET", "/api/v1/images/1"),
    ("GET", "/api/v1/images/1/content"),
    ("GET", "/api/v1/images/1/thumbnail"),
    ("DELETE", "/api/v1/images/1"),
]


WRONG_HEADERS: list[dict[str, str | bytes]] = [
    {},
    _bearer("wrong"),
    _bearer(TOKEN + "x"),
    _bearer(TOKEN[:-1]),
    _bearer(TOKEN.upper()),
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer été".encode()},
]


@sqlite_only
def test_every_api_route_refuses_a_missing_or_wrong_token(guarded: TestClient) -> None:
    for headers in WRONG_HEADERS:
        for method, path in API_CALLS:
            # Even a request that is invalid in other ways is refused for the token first.
            response = guarded.request(method, path, headers=headers, json={"url": 5})
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_right_token_opens_the_api(guarded: TestClient) -> None:
    headers = _bearer(TOKEN)
    assert guarded.get("/api/v1/imports", headers=headers).json()["items"] == []
    response = guarded.post("/api/v1/imports", json={"url": Drive.url(GOOD)}, headers=headers)
    assert response.status_code == 202, response.text
    guarded.headers.update(headers)
    final = wait_for(guarded, response.json()["id"])
    assert final["state"] == "succeeded"
    image = guarded.get("/api/v1/images").json()["items"][0]
    content = guarded.get(image["links"]["content"])
    assert content.status_code == 200
    assert content.headers["cache-control"].startswith("private")
    # Problems behind the token are still problems, not 401s.
    assert_problem(guarded.get("/api/v1/images/999"), 404, "not-found")


@sqlite_only
def test_probes_metrics_docs_and_the_page_stay_open(guarded: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/docs"):
        response = guarded.get(path)
        assert response.status_code == 200, (path, response.text)


@sqlite_only
def test_the_openapi_document_declares_the_bearer_scheme(guarded: TestClient) -> None:
    schema = guarded.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/v1/images"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert "401" in schema["paths"]["/api/v1/images"]["get"]["responses"]


@sqlite_only
def test_cors_allows_the_configured_origin_only(guarded: TestClient) -> None:
    preflight = guarded.options(
        "/api/v1/imports",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    refused = guarded.get("/api/v1/imports", headers={"Origin": ORIGIN})
    assert_problem(refused, 401, "unauthorized")
    assert refused.headers["access-control-allow-origin"] == ORIGIN

    created = guarded.post(
        "/api/v1/imports",
        json={"url": Drive.url(GOOD)},
        headers={"Origin": ORIGIN, **_bearer(TOKEN)},
    )
    assert created.status_code == 202
    assert "location" in created.headers["access-control-expose-headers"].lower()
    guarded.headers.update(_bearer(TOKEN))
    wait_for(guarded, created.json()["id"])

    other = guarded.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


@sqlite_only
def test_a_token_wins_over_allow_anonymous(api_settings: Callable[..., Settings]) -> None:
    settings = api_settings(api_token=TOKEN, allow_anonymous=True)
    assert not settings.anonymous_writes
    with TestClient(create_app(settings)) as client:
        for method, path in API_CALLS:
            response = client.request(method, path, json={"url": 5})
            assert_problem(response, 401, "unauthorized")


@sqlite_only
def test_an_empty_token_is_no_token(api_settings: Callable[..., Settings]) -> None:
    # compose passes `API_TOKEN: ${API_TOKEN:-}`: empty means unset, not "the empty token".
    for allow_anonymous, status in ((None, 403), (True, 422)):
        settings = api_settings(api_token="", allow_anonymous=allow_anonymous)
        with TestClient(create_app(settings)) as client:
            response = client.post("/api/v1/imports", json={"url": 5})
            assert response.status_code == status, response.text
