"""Optional bearer-token auth: when API_TOKEN is set, every /api/v1 route needs
`Authorization: Bearer <token>`; health, metrics and the page stay open."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imageimport.api.problems import Problem
from imageimport.settings import secret

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


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected = secret(request.app.state.settings.api_token)
    if not expected:
        return
    if credentials is None:
        raise unauthorized("This API needs a bearer token: send 'Authorization: Bearer <token>'.")
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header may carry any.
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise unauthorized("The bearer token is not valid.")
