"""A pool of threads that pull jobs from a queue and process them."""

from __future__ import annotations

import logging
import random
import threading

from sqlalchemy.exc import SQLAlchemyError

from imageimport.db import repo
from imageimport.errors import TransientError
from imageimport.pipeline.process import fail_item, process_item
from imageimport.queue.base import Delivery, JobQueue
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 60.0


def retry_delay(attempt: int, hinted: float | None = None) -> float:
    """Exponential backoff with jitter, or the source's own Retry-After when it gave one."""
    if hinted is not None:
        return min(hinted, MAX_RETRY_DELAY)
    return min(MAX_RETRY_DELAY, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def handle(runtime: Runtime, delivery: Delivery) -> str:
    """Process one delivery and settle it: ack once the outcome is committed, retry later
    on transient trouble, and record a final failure after the last allowed attempt."""
    job = delivery.job
    try:
        state = process_item(runtime, job, heartbeat=delivery.in_progress)
    except Exception as error:
        transient = isinstance(error, TransientError | SQLAlchemyError | OSError)
        reason = str(error) if isinstance(error, TransientError) else _describe(error)
        if not transient:
            log.exception("unexpected error processing item %s", job.item_id)
        if delivery.attempt >= runtime.settings.max_deliver:
            try:
                fail_item(runtime, job, f"Gave up after {delivery.attempt} attempts: {reason}")
            except SQLAlchemyError:
                log.warning("cannot record the failure of item %s yet", job.item_id)
                delivery.retry_later(retry_delay(delivery.attempt))
                return "retry"
            delivery.give_up()
            return "failed"
        _note_attempt(runtime, job.item_id, reason)
        delivery.retry_later(retry_delay(delivery.attempt, getattr(error, "retry_after", None)))
        return "retry"
    delivery.ack()
    return state


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:500]


def _note_attempt(runtime: Runtime, item_id: int, reason: str) -> None:
    try:
        with runtime.session() as session:
            repo.note_attempt(session, item_id, reason)
    except SQLAlchemyError:
        log.warning("cannot record an attempt of item %s (database unavailable)", item_id)


class WorkerPool:
    """`concurrency` threads, each pulling one job at a time until stopped."""

    def __init__(self, runtime: Runtime, queue: JobQueue, concurrency: int) -> None:
        self.runtime = runtime
        self.queue = queue
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._run, name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Stop pulling; jobs in flight are finished first."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliveries = self.queue.pull(1, timeout=0.5)
            except Exception:
                log.exception("pulling from the queue failed; retrying")
                self._stop.wait(1.0)
                continue
            for delivery in deliveries:
                handle(self.runtime, delivery)
