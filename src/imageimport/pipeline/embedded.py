"""Run an import from start to end in this process and watch it: `imageimport import`.

With the in-process queue, this process also does the work; with NATS, workers elsewhere do
it unless local workers are asked for."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from imageimport.db import repo
from imageimport.db.models import TERMINAL_IMPORT_STATES, Import
from imageimport.imports import Importer
from imageimport.queue.base import JobQueue
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.worker.pool import WorkerPool


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
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        return Snapshot(
            import_id, record.state, record.error, repo.import_counters(session, import_id)
        )


def run_import(
    runtime: Runtime,
    url: str,
    concurrency: int,
    on_progress: Callable[[Snapshot], None] | None = None,
    queue: JobQueue | None = None,
    local_workers: bool = True,
    poll_seconds: float = 0.2,
) -> Snapshot:
    queue = queue or MemoryQueue()
    importer = Importer(runtime, queue)
    # Every slot for this import: sharing slots between imports matters in the long-running
    # processes (serve, worker), where other people's imports wait.
    pool = WorkerPool(runtime, queue, concurrency, import_share=1.0) if local_workers else None
    if pool is not None:
        pool.start()
    try:
        import_id = importer.start(url)  # a bad URL fails here, before anything is recorded
        try:
            while True:
                current = snapshot(runtime, import_id)
                if on_progress is not None:
                    on_progress(current)
                # A final state is not enough: a listing that failed half-way leaves
                # already-queued files that still get imported.
                if current.finished and not importer.is_planning(import_id) and _drained(queue):
                    return current
                time.sleep(poll_seconds)
        finally:
            runtime.forget_source(import_id)
    finally:
        if pool is not None:
            pool.stop()


def _drained(queue: JobQueue) -> bool:
    return not isinstance(queue, MemoryQueue) or queue.outstanding() == 0
