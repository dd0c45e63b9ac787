"""What a process runs imports with, built and closed in one place: the runtime (database,
store, open sources), the queue, the importer and, where this process works on files too, a
worker pool. Built in that order and closed in the reverse one, whatever fails half-way."""

from __future__ import annotations

from typing import Generic, TypeVar

from imageimport.pipeline.pool import WorkerPool
from imageimport.queue import JobQueue, make_queue
from imageimport.runtime import Runtime
from imageimport.services.credentials import CredentialedRuntime
from imageimport.services.imports import Importer
from imageimport.services.waiting import StopFlag, until_up
from imageimport.settings import Settings

R = TypeVar("R", bound=Runtime)


class Services(Generic[R]):
    """`with` starts the pool and closes everything on the way out. Services opened here
    (`open_services`, `services_when_up`) own their runtime and queue; services made around
    a runtime and queue someone else keeps open close only their own pool."""

    def __init__(
        self,
        runtime: R,
        queue: JobQueue,
        *,
        workers: int = 0,
        import_share: float | None = None,
        owned: bool = False,
    ) -> None:
        """`workers`: how many files a pool in this process works on at once (none: 0);
        `import_share` as for WorkerPool."""
        self.runtime = runtime
        self.queue = queue
        self.importer = Importer(runtime, queue)
        self.pool = WorkerPool(runtime, queue, workers, import_share) if workers else None
        self._owned = owned

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()

    def close(self) -> None:
        """Stop the pool (the files in hand get SHUTDOWN_GRACE_SECONDS), then close the queue
        and the runtime if they are ours."""
        try:
            if self.pool is not None:
                self.pool.stop()
        finally:
            if self._owned:
                try:
                    self.queue.close()
                finally:
                    self.runtime.close()

    def __enter__(self) -> Services[R]:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_services(
    settings: Settings, *, workers: int = 0, import_share: float | None = None
) -> Services[Runtime]:
    """The database (migrated), the store and the queue the settings name, or the error
    that keeps one of them from opening."""
    runtime = Runtime(settings)
    try:
        queue = make_queue(settings)
    except BaseException:
        runtime.close()
        raise
    return Services(runtime, queue, workers=workers, import_share=import_share, owned=True)


def services_when_up(
    settings: Settings, stop: StopFlag, *, workers: int = 0
) -> Services[CredentialedRuntime] | None:
    """The database (through a runtime that can read import-specific credentials from
    Kubernetes Secrets; without any it never calls Kubernetes) and the NATS queue, once both
    are up; None when stopped first. For the long-running processes of the distributed mode,
    whose dependencies may come up after them."""
    runtime = until_up("the database", stop, lambda: CredentialedRuntime(settings))
    if runtime is None:
        return None
    queue = until_up("NATS", stop, lambda: make_queue(settings))
    if queue is None:
        runtime.close()
        return None
    return Services(runtime, queue, workers=workers, owned=True)
