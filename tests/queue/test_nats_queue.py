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


def _last_sequence(url: str) -> int:
    import asyncio

    import nats

    async def ask() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_release_hands_the_job_back_without_spending_an_attempt(queue: NatsQueue) -> None:
    queue.publish([job(1)])
    (first,) = queue.pull(1, timeout=1)
    first.retry_later(0)
    (second,) = queue.pull(1, timeout=2)
    assert second.attempt == 2
    second.release()  # the process stopped while downloading it
    (third,) = queue.pull(1, timeout=2)
    assert (third.job.item_id, third.attempt) == (1, 2)
    third.ack()
    assert queue.pull(1, timeout=0.3) == []


def test_an_import_at_its_share_is_skipped_while_another_waits(queue: NatsQueue) -> None:
    """20 jobs of import a ahead of 3 of import b in the stream: with a's share in flight,
    b's jobs are handed out next; a's skipped jobs lose no attempt."""
    queue.publish([job(n, "a") for n in range(20)] + [job(100 + n, "b") for n in range(3)])
    held = queue.pull(2, timeout=1, per_import=2)
    assert [d.job.import_id for d in held] == ["a", "a"]
    others = queue.pull(3, timeout=3, per_import=2)
    assert [d.job.import_id for d in others] == ["b", "b"]  # b's share is 2 as well
    for delivery in held + others:
        delivery.ack()
    rest = []
    deadline = time.monotonic() + 20
    while len(rest) < 19 and time.monotonic() < deadline:
        pulled = queue.pull(2, timeout=1, per_import=2)
        rest += pulled
        for delivery in pulled:
            delivery.ack()
    assert sorted(d.job.item_id for d in rest) == [*range(2, 20), 102]
    assert {d.attempt for d in rest} == {1}


def test_an_import_alone_at_its_share_is_parked_not_sent_round(nats_server) -> None:  # type: ignore[no-untyped-def]
    _purge(nats_server.url)
    queue = NatsQueue(nats_server.url, max_deliver=3, ack_wait_seconds=3)
    try:
        queue.publish([job(n) for n in range(10)])
        held = queue.pull(2, timeout=1, per_import=2)
        assert len(held) == 2
        assert queue.pull(2, timeout=1, per_import=2) == []
        for _ in range(4):  # past ack_wait: the parked message is kept, not delivered again
            time.sleep(1)
            for delivery in held:
                delivery.in_progress()  # what a worker's download heartbeat does
        assert queue.pull(2, timeout=1, per_import=2) == []
        assert _last_sequence(nats_server.url) == 10  # nothing handed back
        held[0].ack()
        (parked,) = queue.pull(1, timeout=2, per_import=2)
        assert parked.attempt == 1
        for delivery in (held[1], parked):
            delivery.ack()
    finally:
        queue.close()


def test_close_hands_parked_jobs_back_untried(nats_server, queue: NatsQueue) -> None:  # type: ignore[no-untyped-def]
    queue.publish([job(n) for n in range(4)])
    held = queue.pull(1, timeout=1, per_import=1)
    assert queue.pull(3, timeout=1, per_import=1) == []  # the next one is parked
    queue.close()
    other = NatsQueue(nats_server.url, max_deliver=3, ack_wait_seconds=2)
    try:
        pulled = []
        deadline = time.monotonic() + 10
        while len(pulled) < 3 and time.monotonic() < deadline:
            pulled += other.pull(4, timeout=1)
        assert {d.attempt for d in pulled} == {1}
        assert held[0].job.item_id not in {d.job.item_id for d in pulled}
    finally:
        other.close()
