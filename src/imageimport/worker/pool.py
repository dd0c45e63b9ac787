"""Pull jobs from a queue and process them with bounded concurrency."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from imageimport import metrics
from imageimport.db import repo
from imageimport.errors import ImageImportError, TransientError
from imageimport.pipeline.process import fail_item, process_item, settle_import
from imageimport.queue.base import Delivery, JobQueue
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 60.0


def retry_delay(attempt: int, hinted: float | None = None) -> float:
    """Exponential backoff with jitter, or the source's own Retry-After when it gave one."""
    if hinted is not None:
        return min(hinted, MAX_RETRY_DELAY)
    return min(MAX_RETRY_DELAY, 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def handle(runtime: Runtime, delivery: Delivery) -> str:
    """Process one delivery and settle it: ack once the outcome is committed, retry later
    on transient trouble, and record a final failure after the last allowed attempt."""
    try:
        return _handle(runtime, delivery)
    except ImageImportError as error:
        # Settling failed (queue unreachable): the message comes back by itself later.
        log.warning("item %s: %s", delivery.job.item_id, error)
        return "unsettled"


def _handle(runtime: Runtime, delivery: Delivery) -> str:
    job = delivery.job
    limit = runtime.settings.max_deliver
    if delivery.attempt > limit:
        # Delivered again although every attempt ended in a crash of the worker itself.
        return _give_up(runtime, delivery, f"Gave up after {limit} attempts that crashed.")
    started = time.monotonic()
    try:
        with metrics.IN_FLIGHT.track_inprogress():
            state = process_item(runtime, job, heartbeat=delivery.in_progress)
    except Exception as error:
        if isinstance(error, TransientError):
            reason = str(error)
        else:
            reason = _describe(error)
            if not isinstance(error, SQLAlchemyError | OSError):
                log.exception("unexpected error processing item %s", job.item_id)
        if delivery.attempt >= limit:
            return _give_up(runtime, delivery, f"Gave up after {limit} attempts: {reason}")
        _note_attempt(runtime, job.item_id, reason)
        delivery.retry_later(retry_delay(delivery.attempt, getattr(error, "retry_after", None)))
        metrics.ITEM_RETRIES.inc()
        return "retry"
    _settle_import(runtime, job.import_id)
    delivery.ack()
    metrics.ITEMS.labels(state).inc()
    metrics.DURATION.observe(time.monotonic() - started)
    return state


def _give_up(runtime: Runtime, delivery: Delivery, reason: str) -> str:
    try:
        fail_item(runtime, delivery.job, reason)
        _settle_import(runtime, delivery.job.import_id)
    except SQLAlchemyError:
        log.warning("cannot record the failure of item %s yet", delivery.job.item_id)
        delivery.retry_later(retry_delay(delivery.attempt))
        return "retry"
    delivery.give_up()
    metrics.ITEMS.labels("failed").inc()
    return "failed"


def _settle_import(runtime: Runtime, import_id: str) -> None:
    try:
        settle_import(runtime, import_id)
    except SQLAlchemyError:
        # The periodic sweep (sweep_finished_imports) settles it once the database is back.
        log.warning("cannot check whether import %s is complete yet", import_id)


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
    """One thread pulls as many jobs as there are idle slots; `concurrency` threads
    process them. `stop()` stops pulling and lets the jobs in hand finish."""

    def __init__(self, runtime: Runtime, queue: JobQueue, concurrency: int) -> None:
        self.runtime = runtime
        self.queue = queue
        self.concurrency = concurrency
        self._slots = threading.Semaphore(concurrency)
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="worker")
        self._puller = threading.Thread(target=self._pull_loop, name="puller", daemon=True)

    def start(self) -> None:
        self._puller.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._puller.join(timeout)
        self._executor.shutdown(wait=True)

    def _pull_loop(self) -> None:
        while not self._stop.is_set():
            self._slots.acquire()
            if self._stop.is_set():
                self._slots.release()
                break
            idle = 1
            while idle < self.concurrency and self._slots.acquire(blocking=False):
                idle += 1
            try:
                deliveries = self.queue.pull(idle, timeout=0.5)
            except Exception as error:
                log.warning("pulling jobs failed (%s); trying again", error)
                deliveries = []
                self._stop.wait(1.0)
            for _ in range(idle - len(deliveries)):
                self._slots.release()
            for delivery in deliveries:
                self._executor.submit(self._run, delivery)

    def _run(self, delivery: Delivery) -> None:
        try:
            handle(self.runtime, delivery)
        finally:
            self._slots.release()
