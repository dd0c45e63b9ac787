import threading
import time

from imageimport.queue.base import Job
from imageimport.queue.memory import MemoryQueue


def job(n: int) -> Job:
    return Job("imp", n, f"remote-{n}")


def test_publish_deduplicates_by_import_and_remote_id() -> None:
    queue = MemoryQueue()
    queue.publish([job(1), job(2)])
    queue.publish([job(1), Job("imp", 99, "remote-2"), Job("other", 1, "remote-1")])
    pulled = queue.pull(10, timeout=0.1)
    assert sorted((d.job.import_id, d.job.remote_id) for d in pulled) == [
        ("imp", "remote-1"),
        ("imp", "remote-2"),
        ("other", "remote-1"),
    ]


def test_ack_settles_and_retry_redelivers_later_with_a_higher_attempt() -> None:
    queue = MemoryQueue()
    queue.publish([job(1)])
    (first,) = queue.pull(1, timeout=0.1)
    assert first.attempt == 1
    assert queue.outstanding() == 1
    first.retry_later(0.2)
    assert queue.pull(1, timeout=0.05) == []
    started = time.monotonic()
    (second,) = queue.pull(1, timeout=2)
    assert time.monotonic() - started >= 0.1
    assert (second.job, second.attempt) == (job(1), 2)
    second.ack()
    assert queue.outstanding() == 0


def test_give_up_drops_the_job() -> None:
    queue = MemoryQueue()
    queue.publish([job(1)])
    queue.pull(1, timeout=0.1)[0].give_up()
    assert queue.outstanding() == 0
    assert queue.pull(1, timeout=0.05) == []


def test_pull_wakes_up_when_a_job_arrives() -> None:
    queue = MemoryQueue()
    threading.Timer(0.1, queue.publish, args=([job(7)],)).start()
    (delivery,) = queue.pull(1, timeout=5)
    assert delivery.job == job(7)


def test_job_round_trips_through_bytes() -> None:
    assert Job.decode(job(5).encode()) == job(5)
    assert job(5).dedup_id == "imp:remote-5"


def test_pull_takes_imports_in_turn_and_skips_one_at_its_share() -> None:
    queue = MemoryQueue()
    queue.publish([Job("a", n, f"a-{n}") for n in range(10)])
    queue.publish([Job("b", n, f"b-{n}") for n in range(3)])
    first = queue.pull(4, timeout=0.1, per_import=3)
    assert [d.job.import_id for d in first] == ["a", "b", "a", "b"]
    second = queue.pull(4, timeout=0.1, per_import=3)
    assert [d.job.import_id for d in second] == ["a", "b"]  # both at their share now
    assert queue.pull(4, timeout=0.1, per_import=3) == []
    first[0].ack()  # one of a's settles: a has room for one more
    (third,) = queue.pull(4, timeout=0.1, per_import=3)
    assert third.job.import_id == "a"


def test_release_puts_the_job_back_first_with_the_same_attempt() -> None:
    queue = MemoryQueue()
    queue.publish([job(1), job(2)])
    first = queue.pull(1, timeout=0.1)[0]
    first.retry_later(0)
    retried = next(d for d in queue.pull(2, timeout=0.5) if d.job == job(1))
    assert retried.attempt == 2
    retried.release()
    (again,) = queue.pull(1, timeout=0.1)
    assert (again.job, again.attempt) == (job(1), 2)


def test_settled_jobs_are_forgotten() -> None:
    """The de-duplication only covers jobs not yet settled, so it never outgrows the queue;
    a job published again after it was done is delivered again (processing it is a no-op)."""
    queue = MemoryQueue()
    for round_ in range(3):
        queue.publish([job(n) for n in range(100)])
        pulled = queue.pull(200, timeout=0.1)
        assert len(pulled) == 100, round_
        for delivery in pulled:
            delivery.ack()
        assert queue.outstanding() == 0
