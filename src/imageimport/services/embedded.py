"""Run an import from start to end in this process and watch it: `imageimport import`,
`imageimport sync`, and `imageimport resume` without NATS.

With the in-process queue, this process also does the work; with NATS, workers elsewhere do
it unless local workers are asked for."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imageimport import db
from imageimport.db.models import TERMINAL_IMPORT_STATES
from imageimport.queue.base import JobQueue
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.services.imports import Importer
from imageimport.services.stack import Services


@dataclass(frozen=True)
class Snapshot:
    import_id: str
    state: str
    error: str | None
    counters: db.Counters
    last_sync: db.SyncRound | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_IMPORT_STATES


def snapshot(runtime: Runtime, import_id: str) -> Snapshot:
    with runtime.session() as session:
        record = db.get_import(session, import_id)
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        return Snapshot(
            import_id,
            record.state,
            record.error,
            db.import_counters(session, import_id),
            db.last_sync(session, import_id),
        )


def run_import(
    runtime: Runtime,
    url: str,
    concurrency: int,
    on_progress: Callable[[Snapshot], None] | None = None,
    queue: JobQueue | None = None,
    local_workers: bool = True,
    poll_seconds: float = 0.2,
    on_resume: Callable[[str], None] | None = None,
    options: dict[str, Any] | None = None,
) -> Snapshot:
    """Import a folder, with these import `options`. With a queue that lives in this process,
    an unfinished import of the same folder (its process was interrupted) is carried on, with
    its own options, instead of starting another one, and `on_resume` is told its id."""
    workers = concurrency if local_workers else 0
    with _services(runtime, queue or MemoryQueue(), workers) as services:
        importer = services.importer
        import_id = None
        if not services.queue.durable:
            import_id = importer.unfinished_import_of(url)
        if import_id is not None and importer.resume(import_id):
            if on_resume is not None:
                on_resume(import_id)
        else:
            # A bad URL fails here, before anything is recorded.
            import_id = importer.start(url, options)
        (result,) = _follow(
            runtime, importer, services.queue, [import_id], on_progress, poll_seconds
        )
        return result


def run_sync(
    runtime: Runtime,
    import_id: str,
    concurrency: int,
    *,
    prune: bool = False,
    on_progress: Callable[[Snapshot], None] | None = None,
    queue: JobQueue | None = None,
    local_workers: bool = True,
    poll_seconds: float = 0.2,
) -> Snapshot:
    """Run a sync round of a finished import (see `Importer.sync`) to its end. Raises
    SyncRefused while the import runs, LookupError for an unknown one."""
    workers = concurrency if local_workers else 0
    with _services(runtime, queue or MemoryQueue(), workers) as services:
        services.importer.sync(import_id, prune=prune, trigger="cli")
        (result,) = _follow(
            runtime, services.importer, services.queue, [import_id], on_progress, poll_seconds
        )
        return result


def resume_imports(
    runtime: Runtime,
    concurrency: int,
    on_progress: Callable[[Snapshot], None] | None = None,
    queue: JobQueue | None = None,
    poll_seconds: float = 0.2,
) -> list[Snapshot]:
    """Finish, in this process, every import that an interrupted process left unfinished."""
    with _services(runtime, queue or MemoryQueue(), concurrency) as services:
        resumed = services.importer.resume_interrupted()
        return _follow(
            runtime, services.importer, services.queue, resumed, on_progress, poll_seconds
        )


def _services(runtime: Runtime, queue: JobQueue, workers: int) -> Services[Runtime]:
    # Every slot for these imports: sharing slots between imports matters in the long-running
    # processes (serve, worker), where other people's imports wait.
    return Services(runtime, queue, workers=workers, import_share=1.0)


def _follow(
    runtime: Runtime,
    importer: Importer,
    queue: JobQueue,
    import_ids: list[str],
    on_progress: Callable[[Snapshot], None] | None,
    poll_seconds: float,
) -> list[Snapshot]:
    """Report progress until every import is finished and no file of theirs is in hand."""
    try:
        while True:
            current = [snapshot(runtime, import_id) for import_id in import_ids]
            if on_progress is not None:
                for snap in current:
                    on_progress(snap)
            # A final state is not enough: a listing that failed half-way leaves
            # already-queued files that still get imported.
            done = all(s.finished and not importer.is_planning(s.import_id) for s in current)
            if done and _drained(queue):
                return current
            time.sleep(poll_seconds)
    finally:
        for import_id in import_ids:
            runtime.forget_source(import_id)


def _drained(queue: JobQueue) -> bool:
    return not isinstance(queue, MemoryQueue) or queue.outstanding() == 0
