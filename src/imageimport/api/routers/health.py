"""Probes and metrics, open even when API_TOKEN is set: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from imageimport import db
from imageimport.api.deps import QueueDep, RuntimeDep
from imageimport.api.problems import Problem, problem_responses
from imageimport.api.schemas import HealthOut, ReadyOut
from imageimport.errors import DatabaseError, ImageImportError
from imageimport.queue.base import JobQueue

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 3.0


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
async def healthz() -> HealthOut:
    """The process answers; nothing else is checked."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness",
    responses=problem_responses(503),
)
async def readyz(request: Request, runtime: RuntimeDep, queue: QueueDep) -> ReadyOut:
    """The database, the queue and the object store each answer within a few seconds."""
    names = ("database", "queue", "store")
    probes: tuple[Callable[[], None], ...] = (
        lambda: db.ping(runtime.engine),
        lambda: _check_queue(queue),
        runtime.store.check,
    )
    prober: Prober = request.app.state.prober
    results = await asyncio.gather(
        *(prober.check(name, probe) for name, probe in zip(names, probes, strict=True))
    )
    checks = dict(zip(names, results, strict=True))
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        summary = "; ".join(f"{name}: {message}" for name, message in failing.items())
        raise Problem(
            503,
            "not-ready",
            f"Not ready: {summary}",
            title="Not ready",
            checks=checks,
            headers={"Retry-After": "5"},
        )
    return ReadyOut(status="ok", checks=checks)


def _check_queue(queue: JobQueue) -> None:
    # NATS can say how much work is waiting, which needs the server; the in-process queue
    # is always there.
    pending_count = getattr(queue, "pending_count", None)
    if pending_count is not None:
        pending_count()


class Prober:
    """Runs each check in a daemon thread of its own, at most one per check at a time: a
    check that hangs neither piles up threads across probes nor holds up shutdown."""

    def __init__(self) -> None:
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, probe: Callable[[], None]) -> Future[None]:
        with self._lock:
            running = self._running.get(name)
            if running is not None and not running.done():
                return running
            future: Future[None] = Future()
            future.set_running_or_notify_cancel()
            self._running[name] = future

        def run() -> None:
            try:
                probe()
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(None)

        threading.Thread(target=run, name=f"readyz-{name}", daemon=True).start()
        return future

    async def check(self, name: str, probe: Callable[[], None]) -> str:
        try:
            waiting = asyncio.wrap_future(self.submit(name, probe))
            await asyncio.wait_for(asyncio.shield(waiting), CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"did not answer within {CHECK_TIMEOUT_SECONDS:g} seconds."
        except DatabaseError as error:
            # Its message may name hosts and users; the log has it, the probe does not.
            log.warning("readiness check %s failed: %s", name, error)
            return f"failed ({error.kind})."
        except ImageImportError as error:
            return str(error)
        except Exception as error:
            # Driver messages may name hosts and users; the log has them, the probe does not.
            log.warning("readiness check %s failed: %s", name, error)
            return f"failed ({type(error).__name__})."
        return "ok"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}},
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
