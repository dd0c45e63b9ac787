"""`imageimport worker`: pull jobs from NATS JetStream and process them until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from imageimport.errors import ConfigError, TransientError
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
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pool: WorkerPool | None = None
    health = HealthServer(health_host, settings.health_port, lambda: pool is not None)
    health.start()
    log.info("worker health and metrics on port %s", health.port)
    try:
        # Dependencies may come up after the worker (compose, Kubernetes): wait for them.
        runtime = _until_up("the database", stop, lambda: Runtime(settings))
        if runtime is None:
            return 0
        queue = _until_up(
            "NATS",
            stop,
            lambda: NatsQueue(
                settings.nats_url or "",
                settings.max_deliver,
                ack_wait_seconds=settings.nats_ack_wait_seconds,
            ),
        )
        if queue is None:
            runtime.close()
            return 0
        pool = WorkerPool(runtime, queue, concurrency)
        pool.start()
        log.info("worker started: %d concurrent files", concurrency)
        stop.wait()
        log.info("stopping: finishing the files in hand")
        pool.stop()
        queue.close()
        runtime.close()
        return 0
    finally:
        health.stop()


def _until_up(what: str, stop: threading.Event, connect: Callable[[], T]) -> T | None:
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
