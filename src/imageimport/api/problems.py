"""Every error the API sends is an RFC 9457 problem (application/problem+json): raised as a
`Problem`, or translated here from framework and domain exceptions."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageimport.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    ImageImportError,
    InvalidSourceURL,
    TransientError,
)
from imageimport.services.options import SpecError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://imageimport.dev/problems/"


_UNREADABLE_BODY = "There was an error parsing the body"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class Problem(Exception):
    """Raise from anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        slug: str | None,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = PROBLEM_BASE + slug if slug else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", f"{what} does not exist.", title="Not found")


def problem_response(request_path: str, problem: Problem) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request_path,
    }
    body.update({k: v for k, v in problem.extensions.items() if v is not None})
    return ProblemResponse(body, status_code=problem.status, headers=problem.headers)


# -- handlers -------------------------------------------------------------------------------


async def _on_problem(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, Problem)
    return problem_response(request.url.path, error)


async def _on_http_exception(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, StarletteHTTPException)
    return problem_response(request.url.path, _from_http_exception(request, error))


def _from_http_exception(request: Request, error: StarletteHTTPException) -> Problem:
    headers = dict(error.headers or {})
    status = error.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = error.detail if isinstance(error.detail, str) and error.detail != phrase else ""
    if status == 404 and not detail:
        detail = f"There is nothing at {request.url.path}."
    elif status == 405:
        allowed = _allowed_methods(request) or headers.get("Allow") or headers.get("allow") or ""
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        if allowed:
            headers["Allow"] = allowed
        detail = f"{request.method} is not allowed on {request.url.path}" + (
            f"; use {allowed}." if allowed else "."
        )
    elif status == 413:
        too_large = content_too_large()
        too_large.detail = detail or too_large.detail
        return too_large
    elif status == 400 and detail == _UNREADABLE_BODY:
        # FastAPI's answer to a body that is not even text (e.g. not UTF-8): to a client,
        # the same mistake as malformed JSON.
        errors = [{"field": "body", "message": "The body is not valid JSON."}]
        return Problem(
            422,
            "validation-error",
            invalid_request_detail(errors),
            title="Invalid request",
            errors=errors,
        )
    elif not detail:
        detail = f"The request failed: {phrase}."
    return Problem(status, None, detail, title=phrase, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the API documents for this path. (Starlette's own Allow header names only
    the methods of the first route whose path matched.)"""
    table = getattr(request.app.state, "methods_by_path", None)
    if table is None:
        table = [
            (re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$"), ops)
            for path, ops in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.methods_by_path = table
    methods: set[str] = set()
    for pattern, operations in table:
        if pattern.match(request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


def content_too_large(limit: int | None = None) -> Problem:
    size = f" of {limit // 1024} KiB" if limit else ""
    return Problem(
        413,
        "content-too-large",
        f"The request body is larger than the limit{size}.",
        title="Content too large",
    )


async def _on_validation_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, RequestValidationError)
    errors = [_field_error(e) for e in error.errors()]
    problem = Problem(
        422,
        "validation-error",
        invalid_request_detail(errors),
        title="Invalid request",
        errors=errors,
    )
    return problem_response(request.url.path, problem)


def invalid_request_detail(errors: list[dict[str, str]]) -> str:
    listed = "; ".join(f"{e['field']} — {e['message'].rstrip('.')}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"The request is not valid: {listed}{more}."


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    location = [str(part) for part in error.get("loc", ())]
    where = location[0] if location else ""
    # "body", "query", "path" say where, not which field; a JSON position is no field name.
    names = [part for part in location[1:] if not part.isdigit() or where != "body"]
    field = ".".join(names) or where or "request"
    if error.get("type") == "json_invalid":
        return {"field": "body", "message": "The body is not valid JSON."}
    message = str(error.get("msg", "is not valid"))
    return {"field": field, "message": message[:300]}


async def _on_invalid_url(request: Request, error: Exception) -> ProblemResponse:
    problem = Problem(
        422,
        "invalid-url",
        str(error),
        title="Not a folder link",
        errors=[{"field": "url", "message": str(error)}],
    )
    return problem_response(request.url.path, problem)


async def _on_unsupported_options(request: Request, error: Exception) -> ProblemResponse:
    problem = Problem(
        422,
        "invalid-options",
        str(error),
        title="Options not supported",
        errors=[{"field": "options", "message": str(error)}],
    )
    return problem_response(request.url.path, problem)


async def _on_domain_error(request: Request, error: Exception) -> ProblemResponse:
    if isinstance(error, TransientError):
        headers = {"Retry-After": str(max(1, round(error.retry_after or 5)))}
        problem = Problem(503, "service-unavailable", str(error), headers=headers)
    elif isinstance(error, ConfigError):
        log.error("configuration problem answering %s: %s", request.url.path, error)
        problem = Problem(503, "service-unavailable", str(error))
    else:
        log.warning("%s %s failed: %s", request.method, request.url.path, error)
        problem = Problem(502, "upstream-error", str(error), title="Upstream error")
    return problem_response(request.url.path, problem)


async def _on_database_unavailable(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, DatabaseUnavailable)
    log.warning("database unavailable answering %s: %s", request.url.path, error.kind)
    problem = Problem(
        503,
        "service-unavailable",
        "The database cannot be reached right now; try again shortly.",
        headers={"Retry-After": "5"},
    )
    return problem_response(request.url.path, problem)


async def _on_database_error(request: Request, error: Exception) -> ProblemResponse:
    # Any other refusal (a constraint, a malformed statement) is a bug of ours.
    log.error("database error answering %s %s", request.method, request.url.path, exc_info=error)
    return problem_response(request.url.path, internal_error())


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(InvalidSourceURL, _on_invalid_url)
    app.add_exception_handler(SpecError, _on_unsupported_options)
    app.add_exception_handler(ImageImportError, _on_domain_error)
    app.add_exception_handler(DatabaseUnavailable, _on_database_unavailable)
    app.add_exception_handler(DatabaseError, _on_database_error)


# -- middleware -------------------------------------------------------------------------------


class CatchAllMiddleware:
    """The last resort: anything unexpected is logged with its traceback and answered with a
    500 problem that says nothing about the internals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if started:
                raise  # too late for a problem response; the server closes the connection
            await problem_response(scope["path"], internal_error())(scope, receive, send)


def internal_error() -> Problem:
    return Problem(
        500,
        "internal-error",
        "Something went wrong on our side; the error has been logged.",
        title="Internal server error",
    )


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with a 413 problem: up front when the length
    is announced, while reading when the body is chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.limit:
            await problem_response(scope["path"], content_too_large(self.limit))(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI passes HTTPExceptions raised while reading the body through to
                    # the exception handlers, which turn this one into the 413 problem.
                    raise StarletteHTTPException(413, content_too_large(self.limit).detail)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- OpenAPI ------------------------------------------------------------------------------------


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting problem answers; `use_problem_media_type` later moves
    their schema from application/json to application/problem+json."""
    from imageimport.api.schemas import ProblemOut

    descriptions = {
        400: "The request is malformed (e.g. a tampered cursor).",
        401: "A bearer token is required (API_TOKEN is set) and was missing or wrong.",
        404: "The resource does not exist.",
        409: "The resource is not in a state that allows this.",
        413: "The request body is larger than 64 KiB.",
        422: "A parameter or the body is not valid.",
        500: "An unexpected error; it has been logged.",
        502: "The object store answered with an error.",
        503: "A backing service (database, queue, store) is unavailable.",
    }
    return {
        status: {"model": ProblemOut, "description": descriptions.get(status, "A problem.")}
        for status in statuses
    }


def use_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are problem+json (FastAPI files them under the route's media type:
    application/json, or text/event-stream on the event stream), and FastAPI's own 422 model
    (which our validation problems do not follow) is replaced by ours."""
    problem = {"$ref": "#/components/schemas/ProblemOut"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in _responses(operation):
                content = response.get("content")
                if status >= 400 and content:
                    (body,) = content.values()
                    if body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        body = {"schema": problem}
                        response["description"] = "A parameter or the body is not valid."
                    response["content"] = {PROBLEM_MEDIA_TYPE: body}
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def _responses(operation: Any) -> Iterable[tuple[int, dict[str, Any]]]:
    if not isinstance(operation, dict):
        return ()
    return (
        (int(code), response)
        for code, response in operation.get("responses", {}).items()
        if str(code).isdigit()
    )
