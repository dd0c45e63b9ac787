"""The FastAPI application: the REST API under /api/v1, probes, and the web page at /."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from imageimport import __version__
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
from imageimport.imports import Importer
from imageimport.queue import make_queue
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.worker.pool import WorkerPool

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024

DESCRIPTION = """\
Import every image of a public Google Drive folder or Dropbox shared folder into object
storage, and browse what was imported.

Errors are RFC 9457 problems (`application/problem+json`). When the server has `API_TOKEN`
set, every `/api/v1` route needs `Authorization: Bearer <API_TOKEN>`.
"""


def create_app(settings: Settings | None = None, *, local_workers: bool = True) -> FastAPI:
    """The app; its lifespan opens the database, store and queue, resumes interrupted
    listings and, with `local_workers`, runs a worker pool in this process."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        try:
            queue = make_queue(settings)
        except BaseException:
            runtime.close()
            raise
        importer = Importer(runtime, queue)
        pool = WorkerPool(runtime, queue, settings.concurrency) if local_workers else None
        app.state.runtime, app.state.queue = runtime, queue
        app.state.importer, app.state.pool = importer, pool
        if pool is not None:
            pool.start()
        try:
            if settings.mode != "kubernetes":  # there, the operator resumes listings
                importer.resume_interrupted()
            yield
        finally:
            # Off the event loop: jobs in hand get to finish while responses still flow.
            if pool is not None:
                await anyio.to_thread.run_sync(pool.stop)
            queue.close()
            runtime.close()

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

    # Last added is outermost: CORS headers go on every answer, problems included.
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

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return use_problem_media_type(generate())

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            raise not_found("The web page")
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    # check_dir=False: the app must start even from an install without the page's files.
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
