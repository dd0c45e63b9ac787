"""Property-based: requests generated from /openapi.json (valid and invalid ones) never get
a 5xx, and every response matches its documented status, content type, headers and schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis

# Imported here, at a shallow stack: loaded lazily deep inside a fixture, its compilation
# under pytest's assertion rewriting can hit CPython 3.11.7's "AST constructor recursion
# depth mismatch" SystemError.
import schemathesis.specs.openapi.schemas
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from imageimport.api import create_app
from imageimport.settings import Settings

TOKEN = "schemathesis-token"


def without_lifespan(app: FastAPI) -> Callable[..., Any]:
    """The app for schemathesis to call, minus the lifespan: the fixture runs that once, and
    schemathesis treats an app that refuses the lifespan scope as having none."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("the test runs the lifespan itself")
        await app(scope, receive, send)

    return asgi


@pytest.fixture
def api_schema(api_settings: Callable[..., Settings]) -> Iterator[Any]:
    # Imports started by generated requests point at the fake Drive, which does not know
    # their folders: they fail within milliseconds, so event streams end too.
    app = create_app(api_settings(api_token=TOKEN, source_retry_attempts=1))
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", without_lifespan(app))
        schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
        schema.config.generation.update(max_examples=15, modes=["positive", "negative"])
        yield schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(120)
@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_the_api_keeps_its_documented_promises(case: Any) -> None:
    # Every check but "schema-valid data is accepted": any string fits `url` in the schema,
    # yet only folder links are accepted (a 422 problem otherwise, as documented).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
