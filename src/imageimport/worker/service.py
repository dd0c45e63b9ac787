"""`imageimport worker`: pull jobs from NATS JetStream and process them until told to stop."""

from __future__ import annotations

import logging

from imageimport import db
from imageimport.errors import ConfigError, DatabaseError
from imageimport.runtime import Runtime
from imageimport.services.credentials import CredentialedRuntime
from imageimport.services.stack import Services, services_when_up
from imageimport.services.waiting import StopFlag
from imageimport.settings import Settings
from imageimport.worker.health import HealthServer

log = logging.getLogger(__name__)


def run_worker(settings: Settings, concurrency: int, health_host: str = "0.0.0.0") -> int:
    """Run until SIGTERM or SIGINT; then stop pulling, give the files in hand
    SHUTDOWN_GRACE_SECONDS to finish, hand the rest back to the queue untried, exit 0."""
    if not settings.nats_url:
        raise ConfigError(
            "The worker needs NATS_URL: it takes its jobs from NATS JetStream. (Without NATS, "
            "`imageimport serve` and `imageimport import` process files in their own process.)"
        )
    stop = StopFlag().on_signals()
    services: Services[CredentialedRuntime] | None = None
    health = HealthServer(health_host, settings.health_port, lambda: services is not None)
    health.start()
    log.info("worker health and metrics on port %s", health.port)
    try:
        # Dependencies may come up after the worker (compose, Kubernetes): wait for them.
        services = services_when_up(settings, stop, workers=concurrency)
        if services is None:
            return 0
        with services:
            log.info("worker started: %d concurrent files", concurrency)
            while not stop.is_set():
                stop.wait(SWEEP_SECONDS)
                _sweep(services.runtime)
            log.info(
                "stopping: finishing the files in hand (for up to %g s)",
                settings.shutdown_grace_seconds,
            )
        return 0
    finally:
        health.stop()


SWEEP_SECONDS = 30.0


def _sweep(runtime: Runtime) -> None:
    try:
        with runtime.session() as session:
            for import_id in db.finish_complete_imports(session):
                log.info("import %s is complete", import_id)
    except DatabaseError as error:
        log.warning("sweeping finished imports failed: %s", str(error).splitlines()[0])


__all__ = ["run_worker"]
