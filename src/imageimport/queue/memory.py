"""The in-process queue of the embedded default."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

from imageimport.queue.base import Delivery, Job, JobQueue


class MemoryQueue(JobQueue):
    durable = False

    def __init__(self) -> None:
        self._ready: deque[tuple[Job, int]] = deque()
        self._delayed: list[tuple[float, int, Job, int]] = []
        self._seen: set[str] = set()
        self._in_flight = 0
        self._order = itertools.count()
        self._cond = threading.Condition()

    def publish(self, jobs: Sequence[Job]) -> None:
        with self._cond:
            for job in jobs:
                if job.dedup_id not in self._seen:
                    self._seen.add(job.dedup_id)
                    self._ready.append((job, 1))
            self._cond.notify_all()

    def pull(self, max_jobs: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._release_due()
                if self._ready:
                    batch: list[Delivery] = []
                    while self._ready and len(batch) < max_jobs:
                        job, attempt = self._ready.popleft()
                        self._in_flight += 1
                        batch.append(_MemoryDelivery(self, job, attempt))
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._delayed:
                    remaining = min(remaining, max(0.0, self._delayed[0][0] - time.monotonic()))
                self._cond.wait(remaining)

    def outstanding(self) -> int:
        """Jobs not yet settled: ready, waiting to be retried, or being processed."""
        with self._cond:
            return len(self._ready) + len(self._delayed) + self._in_flight

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, job, attempt = heapq.heappop(self._delayed)
            self._ready.append((job, attempt))

    def _settle(self, job: Job, retry_in: float | None, attempt: int) -> None:
        with self._cond:
            self._in_flight -= 1
            if retry_in is not None:
                ready_at = time.monotonic() + retry_in
                heapq.heappush(self._delayed, (ready_at, next(self._order), job, attempt + 1))
            self._cond.notify_all()


class _MemoryDelivery(Delivery):
    def __init__(self, queue: MemoryQueue, job: Job, attempt: int) -> None:
        self._queue = queue
        self.job = job
        self.attempt = attempt
        self._settled = False

    def _once(self, retry_in: float | None) -> None:
        if self._settled:
            raise RuntimeError("delivery already settled")
        self._settled = True
        self._queue._settle(self.job, retry_in, self.attempt)

    def ack(self) -> None:
        self._once(None)

    def give_up(self) -> None:
        self._once(None)

    def retry_later(self, delay_seconds: float) -> None:
        self._once(max(0.0, delay_seconds))
