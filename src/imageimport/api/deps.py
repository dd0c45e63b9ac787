"""What routes get injected: the app's long-lived components (kept on app.state by the
lifespan) and one database session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from imageimport import db
from imageimport.api.pagination import Cursors
from imageimport.queue.base import JobQueue
from imageimport.runtime import Runtime
from imageimport.services.imports import Importer
from imageimport.services.options import check_import_options
from imageimport.settings import Settings
from imageimport.storage.base import ObjectStore


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_importer(request: Request) -> Importer:
    return request.app.state.importer


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_cursors(request: Request) -> Cursors:
    return request.app.state.cursors


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ImporterDep = Annotated[Importer, Depends(get_importer)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
CursorsDep = Annotated[Cursors, Depends(get_cursors)]


async def get_store(runtime: RuntimeDep) -> ObjectStore:
    return runtime.store


StoreDep = Annotated[ObjectStore, Depends(get_store)]


def get_session(runtime: RuntimeDep) -> Iterator[db.Session]:
    """Read-only unless the route commits; rolled back and closed after the response."""
    with db.reading(runtime.sessions) as session:
        yield session


SessionDep = Annotated[db.Session, Depends(get_session)]


class Starter(Protocol):
    """Starts an import and returns its id; InvalidSourceURL for a bad link, SpecError for
    options it cannot honour."""

    def __call__(self, url: str, options: dict[str, Any]) -> str: ...


async def get_starter(request: Request, importer: ImporterDep) -> Starter:
    """Standalone mode: record the import and list it from this process. The Kubernetes mode
    (settings.mode == "kubernetes") swaps this one component for one that creates an
    ImageImport resource; every other part of POST /imports stays as it is."""
    if request.app.state.settings.mode == "kubernetes":
        from imageimport.api.kubernetes import resource_starter

        return resource_starter(request.app.state)

    settings = request.app.state.settings

    def start(url: str, options: dict[str, Any]) -> str:
        check_import_options(options, settings)
        return importer.start(url, options)

    return start


StarterDep = Annotated[Starter, Depends(get_starter)]
