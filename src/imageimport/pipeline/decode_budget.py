"""The memory one process lets image decoding hold at once (DECODE_MEMORY_BYTES)."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# How often a decode waiting for its turn says it is still alive (NATS's ack-wait is >= 5 s).
HEARTBEAT_SECONDS = 5.0
# glibc's mallopt parameter, and the size from which allocations get a mapping of their own.
_M_MMAP_THRESHOLD = -3
_OWN_MAPPING_FROM = 1024 * 1024


class DecodeBudget:
    """A weighted semaphore over bytes: each decode reserves an upper bound of the memory it
    will hold before it decodes, and gives it back once done, so the decodes in flight
    together never hold more than `capacity`. Reservations are granted in arrival order: a
    large image waits for room, and small ones arriving after it wait behind it rather than
    starve it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._line: deque[object] = deque()
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, heartbeat: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold `nbytes` of the budget for the duration of the block, waiting for them first
        (calling `heartbeat` every few seconds meanwhile)."""
        if nbytes > self.capacity:
            # Would wait forever: the caller refuses such an image before it gets here.
            raise ValueError(f"{nbytes} bytes exceed the whole budget of {self.capacity}")
        self._acquire(nbytes, heartbeat)
        try:
            yield
        finally:
            with self._changed:
                self._free += nbytes
                self._changed.notify_all()

    def _acquire(self, nbytes: int, heartbeat: Callable[[], None] | None) -> None:
        ticket = object()
        last_beat = time.monotonic()
        with self._changed:
            self._line.append(ticket)
            try:
                while self._line[0] is not ticket or self._free < nbytes:
                    self._changed.wait(HEARTBEAT_SECONDS)
                    if heartbeat is not None and time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                        self._changed.release()  # a heartbeat may do I/O: not under the lock
                        try:
                            heartbeat()
                        finally:
                            self._changed.acquire()
                        last_beat = time.monotonic()
            finally:
                # Granted or given up (an exception): either way out of the line, and the
                # next in line may now go.
                self._line.remove(ticket)
                self._changed.notify_all()
            self._free -= nbytes


_shared: dict[int, DecodeBudget] = {}
_shared_lock = threading.Lock()


def shared_budget(capacity: int) -> DecodeBudget:
    """The budget of `capacity` bytes all threads of this process share (DECODE_MEMORY_BYTES
    is one setting per process, so in practice there is one)."""
    with _shared_lock:
        budget = _shared.get(capacity)
        if budget is None:
            return_freed_memory_to_the_system()
            budget = _shared[capacity] = DecodeBudget(capacity)
        return budget


def return_freed_memory_to_the_system() -> None:
    """Make glibc give large blocks back to the system as soon as they are freed, so that
    what the budget counts is what the process holds.

    glibc serves large allocations with a mapping of their own, unmapped when freed, but
    raises that size (up to 32 MiB) whenever such a block is freed. Then the 16 MiB blocks
    Pillow decodes into, and S3's 8 MiB parts, come from per-thread heaps, which keep freed
    memory resident for that thread: eight threads decoding in turn held 2.4 GB for decodes
    never above 0.9 GB at once. A fixed size turns that adjustment off. (Other C libraries:
    nothing to do.)"""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _OWN_MAPPING_FROM)
