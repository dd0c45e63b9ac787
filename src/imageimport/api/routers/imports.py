"""/api/v1/imports: start, list, watch, cancel, retry and sync imports."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from imageimport import db
from imageimport.api.deps import (
    CursorsDep,
    ImporterDep,
    RuntimeDep,
    SessionDep,
    StarterDep,
)
from imageimport.api.pagination import id_position, time_and_id_position
from imageimport.api.problems import Problem, not_found, problem_responses
from imageimport.api.schemas import (
    API_PREFIX,
    ImportCreate,
    ImportOut,
    ImportPage,
    ImportStatus,
    ItemOut,
    ItemPage,
    SyncCreate,
)
from imageimport.db.models import TERMINAL_IMPORT_STATES, Import, ItemState
from imageimport.errors import DatabaseError, SyncRefused
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/imports", tags=["imports"])

# How often an event stream looks at the database.
POLL_SECONDS = 0.5

CursorParam = Annotated[
    str | None, Query(description="The `next_cursor` of the previous page.", max_length=512)
]


# -- reading ----------------------------------------------------------------------------------


def canonical_id(raw: str) -> str | None:
    """Import ids are UUIDs; anything else cannot name one (a 404, not a 422)."""
    if len(raw) > 64:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def load_import(session: db.Session, raw_id: str) -> Import:
    import_id = canonical_id(raw_id)
    record = db.get_import(session, import_id) if import_id else None
    if record is None:
        raise not_found(f"Import {raw_id[:64]!r}")
    return record


def import_view(session: db.Session, record: Import) -> ImportOut:
    counters = db.import_counters(session, record.id)
    last_sync = db.last_sync(session, record.id)
    current_file = db.latest_settled_path(session, record.id)
    return ImportOut.model_validate(ImportStatus(record, counters, last_sync, current_file))


def fresh_view(session: db.Session, import_id: str) -> ImportOut:
    """The import as it is now, after a change made through another session."""
    record = db.fresh_import(session, import_id)
    if record is None:
        raise not_found(f"Import {import_id!r}")
    return import_view(session, record)


# -- routes ------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    response_model=ImportOut,
    summary="Start an import",
    responses=problem_responses(413, 422, 503),
)
def create_import(
    body: ImportCreate, response: Response, session: SessionDep, start: StarterDep
) -> ImportOut:
    """Record an import of the folder behind `url` and start listing it. Answers at once;
    follow it with GET on `Location` or the `events` stream."""
    import_id = start(body.url, body.options)
    response.headers["Location"] = f"{API_PREFIX}/imports/{import_id}"
    return fresh_view(session, import_id)


@router.get(
    "",
    response_model=ImportPage,
    summary="List imports, newest first",
    responses=problem_responses(400, 422),
)
def list_imports(
    session: SessionDep,
    cursors: CursorsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
) -> ImportPage:
    after = None
    if cursor is not None:
        after = time_and_id_position(cursors.decode(cursor, "imports", {}))
    records = db.newest_imports(session, limit + 1, after)
    page, more = records[:limit], len(records) > limit
    # One query each for the whole page.
    counters = db.counters(session, [r.id for r in page])
    syncs = db.last_syncs(session, [r.id for r in page])
    next_cursor = None
    if more:
        last = page[-1]
        position = {"at": last.created_at.isoformat(), "id": last.id}
        next_cursor = cursors.encode("imports", position, {})
    return ImportPage(
        items=[
            ImportOut.model_validate(ImportStatus(r, counters[r.id], syncs.get(r.id))) for r in page
        ],
        next_cursor=next_cursor,
    )


@router.get(
    "/{import_id}",
    response_model=ImportOut,
    summary="One import",
    responses=problem_responses(404),
)
def get_import(import_id: str, session: SessionDep) -> ImportOut:
    return import_view(session, load_import(session, import_id))


@router.get(
    "/{import_id}/items",
    response_model=ItemPage,
    summary="The files of an import",
    responses=problem_responses(400, 404, 422),
)
def list_items(
    import_id: str,
    session: SessionDep,
    cursors: CursorsDep,
    state: Annotated[ItemState | None, Query(description="Only files in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorParam = None,
) -> ItemPage:
    """In listing order (item id ascending)."""
    record = load_import(session, import_id)
    filters = {"import": record.id, "state": state}
    after = id_position(cursors.decode(cursor, "items", filters)) if cursor is not None else None
    rows = db.item_page(session, record.id, limit + 1, state=state, after=after)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursors.encode("items", {"id": page[-1].id}, filters)
    return ItemPage(items=[ItemOut.model_validate(item) for item in page], next_cursor=next_cursor)


@router.post(
    "/{import_id}/cancel",
    response_model=ImportOut,
    summary="Cancel an import",
    responses=problem_responses(404, 409),
)
def cancel_import(import_id: str, session: SessionDep, importer: ImporterDep) -> ImportOut:
    """Files not processed yet are settled as cancelled; files being processed finish."""
    record = load_import(session, import_id)
    if not importer.cancel(record.id):
        current = fresh_view(session, record.id)
        raise Problem(
            409,
            "import-finished",
            f"Import {record.id} has already finished ({current.state}); there is nothing "
            "to cancel.",
            title="Import already finished",
            state=current.state,
        )
    return fresh_view(session, record.id)


@router.post(
    "/{import_id}/retry",
    status_code=202,
    response_model=ImportOut,
    summary="Retry the failed files of a finished import",
    responses=problem_responses(404, 409),
)
def retry_import(import_id: str, session: SessionDep, importer: ImporterDep) -> ImportOut:
    """Sends the failed files round again; an import whose listing failed is listed again."""
    record = load_import(session, import_id)
    state, listed = record.state, record.started_at is not None
    if state not in ("completed_with_failures", "failed") or (state == "failed" and not listed):
        raise _nothing_to_retry(record.id, state)
    session.rollback()  # the importer changes the import through its own session
    if importer.retry(record.id) == 0 and state != "failed":
        # Another request retried it first.
        raise _nothing_to_retry(record.id, fresh_view(session, record.id).state)
    return fresh_view(session, record.id)


def _nothing_to_retry(import_id: str, state: str) -> Problem:
    if state not in TERMINAL_IMPORT_STATES:
        reason = "it is still running; wait until it has finished"
    elif state == "succeeded":
        reason = "it has no failed files"
    elif state == "cancelled":
        reason = "it was cancelled; start a new import of the folder instead"
    else:
        reason = "it failed before its folder could be listed; start a new import instead"
    return Problem(
        409,
        "nothing-to-retry",
        f"Import {import_id} cannot be retried: {reason}.",
        title="Nothing to retry",
        state=state,
    )


@router.post(
    "/{import_id}/sync",
    status_code=202,
    response_model=ImportOut,
    summary="Sync a finished import with its folder",
    responses=problem_responses(404, 409, 422),
)
def sync_import(
    import_id: str, session: SessionDep, importer: ImporterDep, body: SyncCreate | None = None
) -> ImportOut:
    """Lists the folder again into the same import: new and changed files are imported,
    unchanged ones are not downloaded, files no longer there become `gone` (and with
    `prune`, their images are deleted unless another file holds them). One round at a time;
    follow it like the import. The body is optional."""
    record = load_import(session, import_id)
    session.rollback()  # the importer changes the import through its own session
    try:
        importer.sync(record.id, prune=body.prune if body is not None else False)
    except SyncRefused as error:
        raise Problem(
            409,
            "sync-refused",
            str(error),
            title="Import still running",
            state=fresh_view(session, record.id).state,
        ) from None
    return fresh_view(session, record.id)


# -- events ------------------------------------------------------------------------------------


def _read_view(runtime: Runtime, import_id: str) -> ImportOut | None:
    with db.reading(runtime.sessions) as session:
        record = db.get_import(session, import_id)
        return import_view(session, record) if record is not None else None


async def import_to_follow(import_id: str, runtime: RuntimeDep) -> ImportOut:
    """A dependency, so an unknown import is a 404 problem before the stream begins."""
    canonical = canonical_id(import_id)
    view = await run_in_threadpool(_read_view, runtime, canonical) if canonical else None
    if view is None:
        raise not_found(f"Import {import_id[:64]!r}")
    return view


def _fingerprint(view: ImportOut) -> Any:
    # The rate moves with the clock alone; only real changes are worth an event.
    return json.dumps(view.model_dump(mode="json", exclude={"rate"}), sort_keys=True)


@router.get(
    "/{import_id}/events",
    summary="Follow an import live (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`event: progress` with the Import JSON at once and on every change; "
            "`: ping` comments every 15 s of silence; `event: end` with the final Import "
            "JSON once it reaches a final state, then the stream closes.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
)
async def import_events(
    runtime: RuntimeDep, view: Annotated[ImportOut, Depends(import_to_follow)]
) -> AsyncIterator[ServerSentEvent]:
    # FastAPI frames the events, sends the `: ping` comments while this is quiet, and asks
    # proxies not to cache or buffer the stream.
    yield ServerSentEvent(event="progress", data=view)
    sent = _fingerprint(view)
    while view.state not in TERMINAL_IMPORT_STATES:
        await asyncio.sleep(POLL_SECONDS)
        try:
            latest = await run_in_threadpool(_read_view, runtime, view.id)
        except DatabaseError as error:
            # A database blip need not end the stream: nothing new to say, pings go on.
            log.warning("event stream of import %s: %s", view.id, type(error).__name__)
            continue
        if latest is None:
            return  # deleted meanwhile: there is no final state to report
        view = latest
        if view.state not in TERMINAL_IMPORT_STATES and _fingerprint(view) != sent:
            yield ServerSentEvent(event="progress", data=view)
            sent = _fingerprint(view)
    yield ServerSentEvent(event="end", data=view)
