"""Waiting for the services a long-running process needs (PostgreSQL, NATS): in compose and
Kubernetes they may come up after it, so the worker and the operator wait, saying why, until
they are up or the process is told to stop."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from imageimport.errors import DatabaseError, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")


class StopFlag:
    """Set from a signal handler, which must not take locks: the handler runs in the main
    thread, which may hold the very lock a threading.Event.set() would need."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, *_: object) -> None:
        self.requested = True

    def on_signals(self) -> StopFlag:
        """Set on SIGTERM and SIGINT from now on."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)
        return self

    def is_set(self) -> bool:
        return self.requested

    def wait(self, seconds: float | None = None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.requested and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)


def until_up(what: str, stop: StopFlag, connect: Callable[[], T]) -> T | None:
    """connect() once it succeeds, or None when stopped first. A configuration error (wrong
    credentials, a malformed URL) is raised: waiting cannot fix it."""

    def say_why(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("waiting for %s: %s", what, str(error).splitlines()[0])

    waiting = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((TransientError, DatabaseError, OSError)),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),  # 0.5 s, doubling up to 10 s
        stop=tenacity.stop_never,  # stopping is the StopFlag's, checked before each attempt
        sleep=stop.wait,  # a stop cuts the wait short
        before_sleep=say_why,
    )
    for attempt in waiting:
        if stop.is_set():
            return None
        with attempt:
            return connect()
    raise AssertionError("unreachable")  # pragma: no cover
