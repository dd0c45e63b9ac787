"""The in-process queue of the embedded default.

One lane per import, served round robin: a pull takes one job from each import in turn, and
skips an import that already has its share of jobs in flight, so one import with thousands
of slow files cannot hold every slot while another waits."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence

from imageimport.queue.base import Delivery, Job, JobQueue


class MemoryQueue(JobQueue):
    durable = False

    def __init__(self) -> None:
        # import id -> its ready jobs (with their attempt number), in the order served next.
        self._lanes: OrderedDict[str, deque[tuple[Job, int]]] = OrderedDict()
        self._delayed: list[tuple[float, int, Job, int]] = []
        # Dedup ids of the jobs not yet settled: publishing one of them again is a no-op.
        # Settled jobs are forgotten, so this never outgrows the queue itself; a job
        # published again after it was done is processed as a redelivery (a no-op too).
        self._unsettled: set[str] = set()
        self._in_flight: Counter[str] = Counter()
        self._order = itertools.count()
        self._cond = threading.Condition()

    def publish(self, jobs: Sequence[Job]) -> None:
        with self._cond:
            for job in jobs:
                if job.dedup_id not in self._unsettled:
                    self._unsettled.add(job.dedup_id)
                    self._lane(job.import_id).append((job, 1))
            self._cond.notify_all()

    def pull(self, max_jobs: int, timeout: float, per_import: int | None = None) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._release_due()
                batch = self._take(max_jobs, per_import)
                if batch:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._delayed:
                    remaining = min(remaining, max(0.0, self._delayed[0][0] - time.monotonic()))
                # Woken by a publish, and by every settle (an import may have room again).
                self._cond.wait(remaining)

    def _take(self, max_jobs: int, per_import: int | None) -> list[Delivery]:
        batch: list[Delivery] = []
        while len(batch) < max_jobs:
            import_id = next(
                (i for i in self._lanes if per_import is None or self._in_flight[i] < per_import),
                None,
            )
            if import_id is None:
                return batch
            lane = self._lanes[import_id]
            job, attempt = lane.popleft()
            if lane:
                self._lanes.move_to_end(import_id)  # the next job comes from another import
            else:
                del self._lanes[import_id]
            self._in_flight[import_id] += 1
            batch.append(_MemoryDelivery(self, job, attempt))
        return batch

    def outstanding(self) -> int:
        """Jobs not yet settled: ready, waiting to be retried, or being processed."""
        with self._cond:
            ready = sum(len(lane) for lane in self._lanes.values())
            return ready + len(self._delayed) + self._in_flight.total()

    def _lane(self, import_id: str) -> deque[tuple[Job, int]]:
        lane = self._lanes.get(import_id)
        if lane is None:
            lane = self._lanes[import_id] = deque()
        return lane

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, job, attempt = heapq.heappop(self._delayed)
            self._lane(job.import_id).append((job, attempt))

    def _settle(self, job: Job, attempt: int, outcome: str, retry_in: float = 0.0) -> None:
        with self._cond:
            self._in_flight[job.import_id] -= 1
            if self._in_flight[job.import_id] <= 0:
                del self._in_flight[job.import_id]
            if outcome == "retry":
                ready_at = time.monotonic() + retry_in
                heapq.heappush(self._delayed, (ready_at, next(self._order), job, attempt + 1))
            elif outcome == "release":
                # First in its lane again, with the same attempt number: it was not tried.
                self._lane(job.import_id).appendleft((job, attempt))
            else:
                self._unsettled.discard(job.dedup_id)
            self._cond.notify_all()


class _MemoryDelivery(Delivery):
    def __init__(self, queue: MemoryQueue, job: Job, attempt: int) -> None:
        self._queue = queue
        self.job = job
        self.attempt = attempt
        self._settled = False

    def _once(self, outcome: str, retry_in: float = 0.0) -> None:
        if self._settled:
            raise RuntimeError("delivery already settled")
        self._settled = True
        self._queue._settle(self.job, self.attempt, outcome, retry_in)

    def ack(self) -> None:
        self._once("done")

    def give_up(self) -> None:
        self._once("done")

    def retry_later(self, delay_seconds: float) -> None:
        self._once("retry", max(0.0, delay_seconds))

    def release(self) -> None:
        self._once("release")
