"""Job queues: in-process for the embedded default, NATS JetStream when distributed."""

from __future__ import annotations

from imageimport.queue.base import Delivery, Job, JobQueue
from imageimport.settings import Settings

__all__ = ["Delivery", "Job", "JobQueue", "make_queue"]


def make_queue(settings: Settings) -> JobQueue:
    """NATS JetStream when NATS_URL is set, the in-process queue otherwise."""
    if settings.nats_url:
        from imageimport.queue.nats import NatsQueue

        return NatsQueue(
            settings.nats_url,
            settings.max_deliver,
            ack_wait_seconds=settings.nats_ack_wait_seconds,
            connect_timeout=settings.nats_connect_timeout_seconds,
        )
    from imageimport.queue.memory import MemoryQueue

    return MemoryQueue()
