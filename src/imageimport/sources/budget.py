"""The request budget of a source's hosts, shared by every planner and worker of an
installation: at most `rate` requests a second on average, `burst` of them at once after a
quiet spell, per provider and credential (the Google API key or Dropbox app key in use, or
"public" for the routes without one).

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as a single time):
each budget has a theoretical arrival time `tat`, the moment its next request is due if
requests went out exactly every `interval` = 1/rate seconds. Taking a request books the next
slot, `tat = max(tat, now) + interval`, and waits until `tolerance` = (burst - 1) x interval
before that slot's start. So in any t seconds at most burst + rate x t requests go out, however
many threads and processes ask. Where `tat` lives is a `SlotBook`: PostgreSQL, one atomic
statement, when the installation runs on it (db/budgets.py); this process's memory otherwise.

Each HTTP stack the sources use takes a request from the budget in one place, just before a
request (a redirect's included) is sent: httpx's request hook (`http.make_http_client`),
httplib2's `request` (the Drive API's listing) and the Dropbox SDK's transport adapter."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from imageimport.sources import transfer

PUBLIC = "public"


class SlotBook(Protocol):
    def book(self, key: str, interval: float) -> float:
        """Move `key`'s next slot on to max(its slot, now) + `interval`, and return how many
        seconds from now that is: the booked slot starts `interval` earlier."""


class MemorySlotBook:
    """The slots of one process's budgets (the embedded default runs one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}

    def book(self, key: str, interval: float) -> float:
        with self._lock:
            now = time.monotonic()
            due = max(self._due.get(key, now), now) + interval
            self._due[key] = due
        return due - now


@functools.cache
def process_slot_book() -> MemorySlotBook:
    """The one book of every source of this process that is given none of its own."""
    return MemorySlotBook()


@dataclass(frozen=True)
class RequestBudget:
    """One provider's budget for one credential. `take()` before every request."""

    book: SlotBook
    key: str
    interval: float  # 0: no limit
    tolerance: float

    @classmethod
    def of(
        cls, book: SlotBook, provider: str, credential: str | None, rate: float, burst: int
    ) -> RequestBudget:
        """`credential`: the key the requests are made with (None for the public routes);
        only a short hash of it is kept, in the key."""
        interval = 1.0 / rate if rate > 0 else 0.0
        return cls(book, budget_key(provider, credential), interval, (burst - 1) * interval)

    def take(self) -> None:
        """Wait for this request's slot. Before a body is downloaded, so no download deadline
        runs yet; a download stopped meanwhile (this process is stopping) stops waiting with
        the reason it was stopped, and its slot goes unused."""
        if not self.interval:
            return
        wait = self.book.book(self.key, self.interval) - self.interval - self.tolerance
        if wait <= 0:
            return
        current = transfer.current()
        if current is None:
            time.sleep(wait)
        else:
            current.wait_unless_cut(wait)


def budget_key(provider: str, credential: str | None) -> str:
    """`provider:` and 16 hex digits of the credential's SHA-256 (never the credential, which
    the table or a log could show), or `provider:public`. API keys and app keys are long
    random strings: the digest gives nothing away."""
    if not credential:
        return f"{provider}:{PUBLIC}"
    return f"{provider}:{hashlib.sha256(credential.encode()).hexdigest()[:16]}"
