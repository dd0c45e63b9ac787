"""The request budgets of an installation on PostgreSQL: every planner and worker books its
requests' slots (sources/budget.py, GCRA) in one table, one row per budget.

Booking is one statement, in an autocommit transaction of its own on a pooled connection,
never inside a caller's session (whose transaction would hold the row's lock until it
commits). The row lock serialises the processes that book at the same moment, each for the
statement's duration; nothing is read first and written after, so there is no retry loop.
Times are the database's own clock (`clock_timestamp()`, read once the row is locked, unlike
`now()`, which is the transaction's start and could lie in the past of a slot booked while
waiting for the lock), so the machines' clocks never need to agree: what comes back is a
duration, which a caller's clock measures just as well."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, text

from imageimport.db.errors import database_errors

# INSERT … ON CONFLICT DO UPDATE: the budget's first request makes its row; every later one
# moves `tat` on (GREATEST: a budget idle since its last slot starts again from now).
_BOOK = text(
    """
    INSERT INTO request_budgets AS budget (key, tat)
    VALUES (:key, clock_timestamp() + :interval)
    ON CONFLICT (key) DO UPDATE SET tat = GREATEST(budget.tat, clock_timestamp()) + :interval
    RETURNING EXTRACT(EPOCH FROM budget.tat - clock_timestamp())
    """
)


class DatabaseSlotBook:
    """A `sources.budget.SlotBook` in PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def book(self, key: str, interval: float) -> float:
        """Seconds from now to the end of the slot booked for `key` (measured from a moment
        after the booking, so a caller that waits for its slot never starts early)."""
        with database_errors(self._engine), self._engine.connect() as connection:
            ahead = connection.execute(
                _BOOK, {"key": key, "interval": timedelta(seconds=interval)}
            ).scalar_one()
        return float(ahead)
