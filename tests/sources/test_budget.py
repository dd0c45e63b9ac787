"""The request budget (GCRA): however many threads, and on PostgreSQL however many
processes, ask for requests at once, no second holds more than the rate plus the burst; a
download stopped while it waits for its slot stops waiting; credentials never show."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from imageimport import db
from imageimport.errors import ImageImportError
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.sources import transfer
from imageimport.sources.budget import MemorySlotBook, RequestBudget, SlotBook, budget_key
from tests.fakes.server import busiest_second

RATE = 5
BURST = 3
THREADS = 12
REQUESTS = 30


def sent_times(budgets: list[RequestBudget]) -> list[float]:
    """THREADS threads share REQUESTS requests (round robin over `budgets`, as processes
    sharing one store would), each recording when its budget let the request go."""
    times: list[float] = []
    left = [REQUESTS]
    lock = threading.Lock()

    def ask(number: int) -> None:
        budget = budgets[number % len(budgets)]
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            budget.take()
            moment = time.monotonic()
            with lock:
                times.append(moment)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def budget(book: SlotBook, key: str = "gdrive-api-key") -> RequestBudget:
    return RequestBudget.of(book, "gdrive", key, RATE, BURST)


def test_threads_of_one_process_never_exceed_the_rate_and_burst() -> None:
    times = sent_times([budget(MemorySlotBook())])
    assert len(times) == REQUESTS
    assert busiest_second(times) <= RATE + BURST, sorted(times)


@pytest.fixture
def postgres_runtimes(
    make_settings: Callable[..., Settings], postgres_database: str
) -> Iterator[list[Runtime]]:
    """Two runtimes with engines of their own on one database, as two processes have."""
    runtimes = [
        Runtime(make_settings(database_url=postgres_database), housekeeping=False) for _ in range(2)
    ]
    yield runtimes
    for runtime in runtimes:
        runtime.close()


@pytest.mark.postgres
def test_threads_of_several_processes_on_postgresql_never_exceed_the_rate_and_burst(
    postgres_runtimes: list[Runtime],
) -> None:
    books = [runtime.slots for runtime in postgres_runtimes]
    assert all(isinstance(book, db.DatabaseSlotBook) for book in books)
    times = sent_times([budget(book) for book in books])
    assert len(times) == REQUESTS
    assert busiest_second(times) <= RATE + BURST, sorted(times)


@pytest.mark.postgres
def test_each_credential_has_a_budget_of_its_own_on_postgresql(
    postgres_runtimes: list[Runtime],
) -> None:
    book = postgres_runtimes[0].slots
    first, second = budget(book, "key one"), budget(book, "key two")
    # A budget whose burst is spent waits; another credential's does not.
    waits = [book.book(first.key, first.interval) for _ in range(BURST + 1)]
    assert waits[-1] - first.interval - first.tolerance > 0
    other = book.book(second.key, second.interval)
    assert other - second.interval - second.tolerance <= 0


def test_the_embedded_default_keeps_the_budgets_in_memory(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings(), housekeeping=False)
    try:
        assert isinstance(runtime.slots, MemorySlotBook)
    finally:
        runtime.close()


def test_a_download_stopped_while_it_waits_for_its_slot_stops_waiting() -> None:
    slow = RequestBudget.of(MemorySlotBook(), "dropbox", None, rate=0.01, burst=1)
    slow.take()  # the burst: the next slot is 100 s away
    stopping = transfer.Transfer()
    reason = ImageImportError("This process is stopping.")
    threading.Timer(0.2, stopping.cut, args=(reason,)).start()
    with transfer.active(stopping), pytest.raises(ImageImportError) as raised:
        slow.take()
    assert raised.value is reason


def test_no_limit_books_nothing() -> None:
    class Refusing:
        def book(self, key: str, interval: float) -> float:
            raise AssertionError("a budget without a limit booked a slot")

    unlimited = RequestBudget.of(Refusing(), "gdrive", "key", rate=0, burst=1)
    for _ in range(100):
        unlimited.take()


def test_the_key_names_the_provider_and_never_the_credential() -> None:
    secret = "AIzaSyD-secret-api-key-0123456789abcdef"
    key = budget_key("gdrive", secret)
    assert key.startswith("gdrive:") and secret not in key and len(key) == len("gdrive:") + 16
    assert budget_key("gdrive", secret) == key
    assert budget_key("gdrive", "another key") != key
    assert budget_key("dropbox", None) == "dropbox:public"
