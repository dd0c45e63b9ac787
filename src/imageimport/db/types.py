"""Column types of our own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A moment, always an aware UTC datetime in Python whatever the database does: SQLite
    keeps no time zone (its DATETIME drops the one it is given and hands back naive values),
    so every moment is stored in UTC and read back as UTC. In PostgreSQL a timestamptz."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            # Which moment a naive datetime means is a guess; every one we make is aware.
            raise TypeError(f"a naive datetime cannot be stored as a moment: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
