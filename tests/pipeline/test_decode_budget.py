"""The per-process decode budget: a weighted semaphore over bytes, granted in arrival order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from imageimport.pipeline import decode_budget
from imageimport.pipeline.decode_budget import DecodeBudget


def _holder(budget: DecodeBudget, nbytes: int, log: list[str], name: str) -> threading.Event:
    """A thread that reserves `nbytes`, notes when it got them, and holds them until the
    returned event is set."""
    release = threading.Event()

    def run() -> None:
        with budget.reserve(nbytes):
            log.append(name)
            release.wait(10)

    threading.Thread(target=run, daemon=True).start()
    return release


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_reservations_together_never_exceed_the_capacity() -> None:
    budget = DecodeBudget(100)
    log: list[str] = []
    first = _holder(budget, 60, log, "first")
    _until(lambda: log == ["first"])
    second = _holder(budget, 60, log, "second")
    time.sleep(0.2)
    assert log == ["first"]  # 120 > 100: the second waits
    first.set()
    _until(lambda: log == ["first", "second"])
    second.set()
    with budget.reserve(100):  # all of it comes back
        pass


def test_a_large_reservation_is_not_overtaken_by_smaller_ones() -> None:
    budget = DecodeBudget(100)
    log: list[str] = []
    first = _holder(budget, 50, log, "first")
    _until(lambda: log == ["first"])
    large = _holder(budget, 100, log, "large")
    time.sleep(0.1)
    small = _holder(budget, 10, log, "small")  # would fit now, but arrived after the large one
    time.sleep(0.2)
    assert log == ["first"]
    first.set()
    _until(lambda: log == ["first", "large"])
    large.set()
    _until(lambda: log == ["first", "large", "small"])
    small.set()


def test_waiting_sends_heartbeats_and_a_failing_one_leaves_the_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decode_budget, "HEARTBEAT_SECONDS", 0.05)
    budget = DecodeBudget(100)
    log: list[str] = []
    holder = _holder(budget, 100, log, "holder")
    _until(lambda: log == ["holder"])
    beats: list[float] = []

    def heartbeat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 3:
            raise RuntimeError("the message was lost")

    with pytest.raises(RuntimeError), budget.reserve(10, heartbeat):
        pass
    assert len(beats) == 3
    holder.set()
    # The one that gave up is out of the line: nothing waits behind it.
    with budget.reserve(100):
        pass


def test_more_than_the_capacity_is_refused_rather_than_awaited() -> None:
    with pytest.raises(ValueError, match="exceed the whole budget"), DecodeBudget(10).reserve(11):
        pass
