"""NatsQueue against a real nats-server with JetStream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from imageimport.queue.base import Job
from imageimport.queue.nats import STREAM, NatsQueue

pytestmark = pytest.mark.nats


@pytest.fixture
def queue(nats_server) -> Iterator[NatsQueue]:  # type: ignore[no-untyped-def]
    _purge(nats_server.url)
    q = NatsQueue(nats_server.url, max_deliver=3, ack_wait_seconds=2)
    yield q
    q.close()


def _purge(url: str) -> None:
    """Each test starts with an empty stream and consumer."""
    import asyncio
    import contextlib

    import nats

    async def purge() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(STREAM)
        await nc.close()

    asyncio.run(purge())


def job(n: int, import_id: str = "imp") -> Job:
    return Job(import_id, n, f"remote-{n}")


def test_publish_is_deduplicated_by_the_server(queue: NatsQueue) -> None:
    queue.publish([job(1), job(2)])
    queue.publish([job(1), job(2), job(3)])  # a planner that restarted
    pulled = queue.pull(10, timeout=1)
    assert sorted(d.job.item_id for d in pulled) == [1, 2, 3]
    for delivery in pulled:
        delivery.ack()
    assert queue.pull(10, timeout=0.3) == []
    assert queue.pending_count() == 0


def test_a_second_consumer_shares_the_work(nats_server, queue: NatsQueue) -> None:  # type: ignore[no-untyped-def]
    other = NatsQueue(nats_server.url, max_deliver=3, ack_wait_seconds=2)
    try:
        queue.publish([job(n) for n in range(10)])
        first = queue.pull(5, timeout=1)
        second = other.pull(10, timeout=1)
        ids = [d.job.item_id for d in first + second]
        assert sorted(ids) == list(range(10))  # each message to exactly one consumer
        for d in first + second:
            d.ack()
    finally:
        other.close()


def test_unacked_messages_come_back_after_ack_wait(queue: NatsQueue) -> None:
    queue.publish([job(1)])
    (first,) = queue.pull(1, timeout=1)
    assert first.attempt == 1
    # No ack: as if the worker died.
    (again,) = queue.pull(1, timeout=5)
    assert (again.job, again.attempt) == (job(1), 2)
    again.ack()


def test_retry_later_redelivers_after_the_delay_and_give_up_drops(queue: NatsQueue) -> None:
    queue.publish([job(1), job(2)])
    deliveries = {d.job.item_id: d for d in queue.pull(2, timeout=1)}
    deliveries[1].retry_later(0.5)
    deliveries[2].give_up()
    started = time.monotonic()
    (back,) = queue.pull(2, timeout=3)
    assert back.job == job(1) and back.attempt == 2
    assert time.monotonic() - started >= 0.3
    back.ack()
    assert queue.pull(2, timeout=0.5) == []


def test_server_stops_delivering_one_past_the_worker_limit(queue: NatsQueue) -> None:
    queue.publish([job(1)])
    attempts = []
    for _ in range(6):
        pulled = queue.pull(1, timeout=1)
        if not pulled:
            break
        attempts.append(pulled[0].attempt)
        pulled[0].retry_later(0)
    assert attempts == [1, 2, 3, 4]


def test_pending_count_counts_published_messages(queue: NatsQueue) -> None:
    queue.publish([job(1)])
    assert queue.pending_count() == 1
