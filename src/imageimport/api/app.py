"""The FastAPI application: the REST API under /api/v1, probes, and the web page at /."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from imageimport import __version__
from imageimport.api.auth import document_write_refusal
from imageimport.api.pagination import Cursors, cursor_key
from imageimport.api.problems import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    install_exception_handlers,
    not_found,
    use_problem_media_type,
)
from imageimport.api.routers import api_router, health_router
from imageimport.api.routers.health import Prober
from imageimport.api.security_headers import SecurityHeadersMiddleware, page_policy
from imageimport.api.trusted_hosts import TrustedHostMiddleware
from imageimport.errors import ImageImportError
from imageimport.runtime import Runtime
from imageimport.services.stack import open_services
from imageimport.settings import Settings
from imageimport.storage.base import ObjectStore

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024

DESCRIPTION = """\
Import every image of a public Google Drive folder or Dropbox shared folder into object
storage, and browse what was imported.

Errors are RFC 9457 problems (`application/problem+json`). When the server has `API_TOKEN`
set, every `/api/v1` route needs `Authorization: Bearer <API_TOKEN>`. Without it, changes
(every POST and DELETE) are refused with a 403 problem unless the server allows anonymous
changes (`ALLOW_ANONYMOUS=true`, or `imageimport serve` on a loopback address).
"""


def create_app(settings: Settings | None = None, *, local_workers: bool = True) -> FastAPI:
    """The app; its lifespan opens the database, store and queue, resumes interrupted
    listings and, with `local_workers`, runs a worker pool in this process."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = open_services(settings, workers=settings.concurrency if local_workers else 0)
        app.state.runtime, app.state.queue = services.runtime, services.queue
        app.state.importer = services.importer
        try:
            services.start()
            if settings.mode != "kubernetes":  # there, the operator resumes listings
                services.importer.resume_interrupted()
            yield
        finally:
            # Off the event loop: jobs in hand get to finish while responses still flow.
            await anyio.to_thread.run_sync(services.close)

    app = FastAPI(
        title="imageimport",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "imports", "description": "Start and follow imports of shared folders."},
            {"name": "images", "description": "The stored images."},
            {"name": "health", "description": "Probes and metrics; never need a token."},
        ],
    )
    app.state.settings = settings
    app.state.cursors = Cursors(cursor_key(settings))
    app.state.prober = Prober()

    install_exception_handlers(app)
    app.include_router(api_router)
    app.include_router(health_router)
    _add_page(app)

    # Last added is outermost: CORS headers go on every answer, problems included; so do
    # the security headers, refusals of unknown hosts included.
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(CatchAllMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location"],
        )
    # Probes and metrics answer any Host: kubelets and load balancers address pods by IP.
    probes = [route.path for route in health_router.routes if isinstance(route, APIRoute)]
    app.add_middleware(TrustedHostMiddleware, allowed=settings.allowed_hosts, open_paths=probes)
    docs = [app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url]
    app.add_middleware(SecurityHeadersMiddleware, framing_only_paths=[p for p in docs if p])

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return use_problem_media_type(document_write_refusal(_openapi_3_1(generate())))

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _openapi_3_1(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI describes each event of an event stream with `itemSchema`, a keyword of OpenAPI
    3.2 that a 3.1 document (ours) may not hold; the stream's description says what comes."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                for media_type in response.get("content", {}).values():
                    media_type.pop("itemSchema", None)
    return schema


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> FileResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            raise not_found("The web page")
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": _page_policy(request)}
        return FileResponse(page, media_type="text/html", headers=headers)

    # check_dir=False: the app must start even from an install without the page's files.
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


def _page_policy(request: Request) -> str:
    state = request.app.state
    policy: str | None = getattr(state, "page_policy", None)
    if policy is None:
        runtime: Runtime | None = getattr(state, "runtime", None)
        policy = page_policy(_presigned_origin(runtime.store) if runtime else None)
        state.page_policy = policy
    return policy


def _presigned_origin(store: ObjectStore) -> str | None:
    """Where the store's presigned links point (signing needs no connection): the origin
    the page's images come from when the API redirects to them."""
    try:
        url = store.presigned_url("images/page-policy")
    except ImageImportError as error:
        # The page must still load; its images will fail to, for the same reason.
        log.warning("cannot sign a link for the page's policy: %s", error)
        return None
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
