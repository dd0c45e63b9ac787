"""`imageimport worker`: pull jobs from NATS JetStream and process them until told to stop."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from imageimport.db import repo
from imageimport.errors import ConfigError, TransientError
from imageimport.operator.credentials import CredentialedRuntime
from imageimport.queue.nats import NatsQueue
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.worker.health import HealthServer
from imageimport.worker.pool import WorkerPool

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_worker(settings: Settings, concurrency: int, health_host: str = "0.0.0.0") -> int:
    """Run until SIGTERM or SIGINT; then stop pulling, finish the files in hand, exit 0."""
    if not settings.nats_url:
        raise ConfigError(
            "The worker needs NATS_URL: it takes its jobs from NATS JetStream. (Without NATS, "
            "`imageimport serve` and `imageimport import` process files in their own process.)"
        )
    stop = _StopFlag()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop.handle)
    pool: WorkerPool | None = None
    health = HealthServer(health_host, settings.health_port, lambda: pool is not None)
    health.start()
    log.info("worker health and metrics on port %s", health.port)
    try:
        # Dependencies may come up after the worker (compose, Kubernetes): wait for them.
        # Imports may name a Kubernetes Secret with their own source credentials; without
        # one, this runtime behaves exactly like a plain Runtime and never calls Kubernetes.
        runtime = _until_up("the database", stop, lambda: CredentialedRuntime(settings))
        if runtime is None:
            return 0
        queue = _until_up(
            "NATS",
            stop,
            lambda: NatsQueue(
                settings.nats_url or "",
                settings.max_deliver,
                ack_wait_seconds=settings.nats_ack_wait_seconds,
                connect_timeout=settings.nats_connect_timeout_seconds,
            ),
        )
        if queue is None:
            runtime.close()
            return 0
        pool = WorkerPool(runtime, queue, concurrency)
        pool.start()
        log.info("worker started: %d concurrent files", concurrency)
        while not stop.is_set():
            stop.wait(SWEEP_SECONDS)
            _sweep(runtime)
        log.info("stopping: finishing the files in hand")
        pool.stop()
        queue.close()
        runtime.close()
        return 0
    finally:
        health.stop()


SWEEP_SECONDS = 30.0


def _sweep(runtime: Runtime) -> None:
    try:
        with runtime.session() as session:
            for import_id in repo.finish_complete_imports(session):
                log.info("import %s is complete", import_id)
    except SQLAlchemyError as error:
        log.warning("sweeping finished imports failed: %s", str(error).splitlines()[0])


class _StopFlag:
    """Set from a signal handler, which must not take locks: the handler runs in the main
    thread, which may hold the very lock a threading.Event.set() would need."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, *_: object) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested

    def wait(self, seconds: float | None = None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.requested and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)


def _until_up(what: str, stop: _StopFlag, connect: Callable[[], T]) -> T | None:
    delay = 0.5
    while not stop.is_set():
        try:
            return connect()
        except (TransientError, SQLAlchemyError, OSError) as error:
            log.warning("waiting for %s: %s", what, str(error).splitlines()[0])
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    return None


__all__ = ["run_worker"]
