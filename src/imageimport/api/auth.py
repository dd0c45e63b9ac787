"""Bearer-token auth: when API_TOKEN is set, every /api/v1 route needs
`Authorization: Bearer <token>`; health, metrics and the page stay open.

Without a token, reads stay open and changes (every POST and DELETE) are refused unless the
server allows anonymous changes (Settings.anonymous_writes): an API anyone can reach must not
let anyone start imports and delete images just because no one set a token."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imageimport.api.problems import Problem
from imageimport.api.schemas import API_PREFIX
from imageimport.settings import secret

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# auto_error=False: a missing header is our 401 problem, not FastAPI's plain 403.
bearer = HTTPBearer(
    auto_error=False,
    description="Only when the server has API_TOKEN set: `Authorization: Bearer <API_TOKEN>`.",
)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        detail,
        title="Unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="imageimport"'},
    )


def writes_need_a_token() -> Problem:
    return Problem(
        403,
        "token-required",
        "This server has no API_TOKEN, so it accepts no changes (starting, cancelling or "
        "retrying imports, deleting images) from anyone. Its operator can set API_TOKEN "
        "(then send 'Authorization: Bearer <token>'), or ALLOW_ANONYMOUS=true to let anyone "
        "who can reach it make changes.",
        title="Changes need an API token",
    )


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    settings = request.app.state.settings
    expected = secret(settings.api_token)
    if not expected:
        if request.method in WRITE_METHODS and not settings.anonymous_writes:
            raise writes_need_a_token()
        return
    if credentials is None:
        raise unauthorized("This API needs a bearer token: send 'Authorization: Bearer <token>'.")
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header may carry any.
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise unauthorized("The bearer token is not valid.")


def document_write_refusal(schema: dict[str, Any]) -> dict[str, Any]:
    """Every change under /api/v1 documents the 403 it answers when the server has no token
    and does not allow anonymous changes."""
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith(API_PREFIX + "/"):
            continue
        for method, operation in operations.items():
            if method.upper() in WRITE_METHODS and isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("403", _refusal_response())
    return schema


def _refusal_response() -> dict[str, Any]:
    # application/json here; use_problem_media_type moves it to application/problem+json.
    return {
        "description": "The server has no API_TOKEN and does not allow anonymous changes.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}},
    }
