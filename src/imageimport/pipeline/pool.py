"""Pull jobs from a queue and process them with bounded concurrency."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable

from imageimport import db, metrics
from imageimport.errors import DatabaseError, ImageImportError, TransientError
from imageimport.pipeline.download import Interrupted
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


def handle(
    runtime: Runtime,
    delivery: Delivery,
    settled: Callable[[str], None],
    abort: threading.Event | None = None,
) -> str:
    """Process one delivery and settle it: ack once the outcome is committed, retry later
    on transient trouble, record a final failure after the last allowed attempt, and hand
    the job back untried when `abort` interrupts it (the process is stopping). `settled` is
    told the import of each item settled here, once its outcome is committed."""
    try:
        return _handle(runtime, delivery, settled, abort)
    except ImageImportError as error:
        # Settling failed (queue unreachable): the message comes back by itself later.
        log.warning("item %s: %s", delivery.job.item_id, error)
        return "unsettled"


def _handle(
    runtime: Runtime,
    delivery: Delivery,
    settled: Callable[[str], None],
    abort: threading.Event | None,
) -> str:
    job = delivery.job
    limit = runtime.settings.max_deliver
    if delivery.attempt > limit:
        # Delivered again although every attempt ended in a crash of the worker itself.
        return _give_up(runtime, delivery, settled, f"Gave up after {limit} attempts that crashed.")
    started = time.monotonic()
    try:
        with metrics.IN_FLIGHT.track_inprogress():
            state = process_item(runtime, job, heartbeat=delivery.in_progress, abort=abort)
    except Interrupted:
        delivery.release()
        return "interrupted"
    except Exception as error:
        if isinstance(error, TransientError):
            reason = str(error)
        else:
            reason = _describe(error)
            if not isinstance(error, DatabaseError | OSError):
                log.exception("unexpected error processing item %s", job.item_id)
        if delivery.attempt >= limit:
            return _give_up(runtime, delivery, settled, f"Gave up after {limit} attempts: {reason}")
        _note_attempt(runtime, job.item_id, reason)
        delivery.retry_later(retry_delay(delivery.attempt, getattr(error, "retry_after", None)))
        metrics.ITEM_RETRIES.inc()
        return "retry"
    settled(job.import_id)
    delivery.ack()
    metrics.ITEMS.labels(state).inc()
    metrics.DURATION.observe(time.monotonic() - started)
    return state


def _give_up(
    runtime: Runtime, delivery: Delivery, settled: Callable[[str], None], reason: str
) -> str:
    try:
        fail_item(runtime, delivery.job, reason)
    except DatabaseError:
        log.warning("cannot record the failure of item %s yet", delivery.job.item_id)
        delivery.retry_later(retry_delay(delivery.attempt))
        return "retry"
    settled(delivery.job.import_id)
    delivery.give_up()
    metrics.ITEMS.labels("failed").inc()
    return "failed"


SETTLE_SECONDS = 0.5


class ImportSettler:
    """Gives imports their final state once their last item is settled, checking each import
    whose items this process settled at most once every `interval` seconds: one query per
    import and interval, not one per file, whose cost would grow with the import (PostgreSQL
    reads past the settled rows to find a pending one). The last item of an import is always
    followed by a check in the process that settled it, within `interval`; a check that
    fails (the database is down) is tried again at the next one."""

    def __init__(self, runtime: Runtime, interval: float = SETTLE_SECONDS) -> None:
        self.runtime = runtime
        self.interval = interval
        self._lock = threading.Lock()
        self._touched: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="settler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Check what is left to check, and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 5)
        self.check()

    def note(self, import_id: str) -> None:
        """An item of this import was settled (and committed)."""
        with self._lock:
            self._touched.add(import_id)

    def check(self) -> None:
        with self._lock:
            touched, self._touched = self._touched, set()
        for import_id in touched:
            try:
                settle_import(self.runtime, import_id)
            except DatabaseError:
                log.warning("cannot check whether import %s is complete yet", import_id)
                self.note(import_id)
            except Exception:
                # Whatever went wrong with this import, the others must still be finished.
                log.exception("checking whether import %s is complete failed", import_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:500]


def _note_attempt(runtime: Runtime, item_id: int, reason: str) -> None:
    try:
        with runtime.session() as session:
            db.note_attempt(session, item_id, reason)
    except DatabaseError:
        log.warning("cannot record an attempt of item %s (database unavailable)", item_id)


# After the grace, how long the interrupted files get to hand their jobs back (and files past
# their download get to finish) before the pool stops waiting for them.
STOP_BOUND_SECONDS = 5.0
PULL_SECONDS = 0.5


class WorkerPool:
    """One thread pulls as many jobs as there are idle slots, and each job runs on a thread
    of its own. One import holds at most `per_import` slots, so another import always finds
    one free. `stop()` stops pulling, lets the jobs in hand finish for a grace period, then
    interrupts the downloads still running: their jobs go back to the queue untried."""

    def __init__(
        self,
        runtime: Runtime,
        queue: JobQueue,
        concurrency: int,
        import_share: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.queue = queue
        self.concurrency = concurrency
        share = runtime.settings.import_concurrency_share if import_share is None else import_share
        self.per_import = max(1, math.floor(concurrency * share))
        self._busy = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._puller = threading.Thread(target=self._pull_loop, name="puller", daemon=True)
        self._settler = ImportSettler(runtime)

    def start(self) -> None:
        self._settler.start()
        self._puller.start()

    def stop(self, grace: float | None = None) -> None:
        """Return within `grace` (SHUTDOWN_GRACE_SECONDS by default) + STOP_BOUND_SECONDS +
        PULL_SECONDS + 1 s. A job still running after that is left behind on its (daemon)
        thread; its delivery is not settled, so the queue hands it out again."""
        grace = self.runtime.settings.shutdown_grace_seconds if grace is None else grace
        self._stop.set()
        if self._puller.is_alive():
            # A pull ends within its 0.5 s unless the queue hangs; what it brings in after
            # the downloads were interrupted goes straight back (see _pull_loop).
            self._puller.join(PULL_SECONDS + 1)
        if not self._wait_idle(grace):
            log.warning("stopping: interrupting %d file(s) still in progress", self._busy)
            self._abort.set()
            if not self._wait_idle(STOP_BOUND_SECONDS):
                log.warning(
                    "stopping: %d file(s) did not finish in time; they will be processed again",
                    self._busy,
                )
        self._settler.stop()

    def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._changed:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _pull_loop(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                while self._busy >= self.concurrency and not self._stop.is_set():
                    self._changed.wait(0.5)
                idle = self.concurrency - self._busy
            if self._stop.is_set():
                break
            try:
                deliveries = self.queue.pull(idle, PULL_SECONDS, per_import=self.per_import)
            except Exception as error:
                log.warning("pulling jobs failed (%s); trying again", error)
                deliveries = []
                self._stop.wait(1.0)
            for delivery in deliveries:
                if self._abort.is_set():
                    with contextlib.suppress(ImageImportError):
                        delivery.release()
                else:
                    self._launch(delivery)

    def _launch(self, delivery: Delivery) -> None:
        with self._changed:
            self._busy += 1
        # A daemon thread: a job stuck past the stop bound must not keep the process alive.
        thread = threading.Thread(target=self._run, args=(delivery,), name="worker", daemon=True)
        thread.start()

    def _run(self, delivery: Delivery) -> None:
        try:
            handle(self.runtime, delivery, self._settler.note, self._abort)
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()
