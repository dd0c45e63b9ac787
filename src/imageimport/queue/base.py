"""The job queue interface, shaped after JetStream's work-queue semantics so the
in-process queue and NATS are interchangeable: publish with a de-duplication id, pull,
and settle each delivery by ack, retry-later or give-up."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Job:
    """Process one listed file. The database row holds everything else."""

    import_id: str
    item_id: int
    remote_id: str
    round: int = 0  # bumped by each retry of the import, so retried files are new jobs
    # Attempts already spent on this file by earlier messages: a queue that hands a job back
    # as a new message (NATS) carries the count over, so giving a job back costs nothing.
    attempts: int = 0

    @property
    def dedup_id(self) -> str:
        # The same file planned twice for the same import (and round) is the same job.
        suffix = f":{self.round}" if self.round else ""
        return f"{self.import_id}:{self.remote_id}{suffix}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Job:
        raw = json.loads(data)
        return cls(
            str(raw["import_id"]),
            int(raw["item_id"]),
            str(raw["remote_id"]),
            int(raw.get("round", 0)),
            int(raw.get("attempts", 0)),
        )


class Delivery(ABC):
    """One delivery of a job; exactly one of ack / retry_later / give_up / release settles it."""

    job: Job
    attempt: int  # 1 for the first delivery

    @abstractmethod
    def ack(self) -> None: ...

    @abstractmethod
    def retry_later(self, delay_seconds: float) -> None: ...

    @abstractmethod
    def give_up(self) -> None: ...

    @abstractmethod
    def release(self) -> None:
        """Hand the job back untried (this process is stopping): it is delivered again, and
        this delivery does not count as an attempt."""

    def in_progress(self) -> None:  # noqa: B027 - only queues with ack deadlines need it
        """Tell the queue the job is still being worked on (long downloads)."""


class JobQueue(ABC):
    # Whether published jobs outlive this process; if not, a restart must publish again.
    durable: bool = True

    @abstractmethod
    def publish(self, jobs: Sequence[Job]) -> None:
        """Enqueue jobs; a job whose dedup id was already published is dropped."""

    @abstractmethod
    def pull(self, max_jobs: int, timeout: float, per_import: int | None = None) -> list[Delivery]:
        """Up to `max_jobs` deliveries, waiting at most `timeout` seconds for the first.
        With `per_import`, never more than that many deliveries of one import unsettled at
        once from this queue object: the other imports' jobs are served first."""

    def close(self) -> None:  # noqa: B027 - optional
        pass
