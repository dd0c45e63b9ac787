"""Job queues: in-process for the embedded default, NATS JetStream when distributed."""

from imageimport.queue.base import Delivery, Job, JobQueue

__all__ = ["Delivery", "Job", "JobQueue"]
