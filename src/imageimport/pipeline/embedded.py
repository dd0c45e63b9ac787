"""Run a whole import in this process: the embedded default behind `imageimport import`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from imageimport.db import repo
from imageimport.db.models import TERMINAL_IMPORT_STATES, Import
from imageimport.pipeline.plan import plan_import
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.sources.base import parse_folder_url
from imageimport.worker.pool import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    import_id: str
    state: str
    error: str | None
    counters: repo.Counters

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_IMPORT_STATES


def snapshot(runtime: Runtime, import_id: str) -> Snapshot:
    with runtime.session() as session:
        record = session.get(Import, import_id)
        assert record is not None
        return Snapshot(
            import_id, record.state, record.error, repo.import_counters(session, import_id)
        )


def run_import(
    runtime: Runtime,
    url: str,
    concurrency: int,
    on_progress: Callable[[Snapshot], None] | None = None,
    poll_seconds: float = 0.2,
) -> Snapshot:
    ref = parse_folder_url(url)  # a bad URL fails here, before anything is recorded
    with runtime.session() as session:
        import_id = repo.create_import(session, ref).id
    queue = MemoryQueue()
    pool = WorkerPool(runtime, queue, concurrency)
    pool.start()
    planner = threading.Thread(
        target=_plan_guarded, args=(runtime, queue, import_id), name="planner", daemon=True
    )
    planner.start()
    try:
        while True:
            current = snapshot(runtime, import_id)
            if on_progress is not None:
                on_progress(current)
            # Terminal state alone is not enough: a listing that failed half-way leaves
            # already-queued files that still get imported.
            if current.finished and not planner.is_alive() and queue.outstanding() == 0:
                return current
            time.sleep(poll_seconds)
    finally:
        pool.stop()
        runtime.forget_source(import_id)


def _plan_guarded(runtime: Runtime, queue: MemoryQueue, import_id: str) -> None:
    try:
        plan_import(runtime, queue, import_id)
    except Exception as error:
        log.exception("planning import %s crashed", import_id)
        with runtime.session() as session:
            repo.advance_import(
                session, import_id, "failed", error=f"Internal error while listing: {error}"
            )
