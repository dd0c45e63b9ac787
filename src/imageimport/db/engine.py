"""Engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from imageimport.errors import ConfigError
from imageimport.settings import Settings


def make_engine(settings: Settings) -> Engine:
    raw = settings.effective_database_url
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # from None: the cause would quote the URL, password included.
        raise ConfigError("DATABASE_URL is not a valid database URL.") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url.database)
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=settings.concurrency + 4,
            max_overflow=8,
            pool_recycle=1800,
        )
    raise ConfigError(f"DATABASE_URL must be a sqlite:// or postgresql:// URL, not {backend}://.")


def _sqlite_engine(database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{database or ':memory:'}",
        connect_args={"check_same_thread": False, "timeout": 60},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        # WAL lets the progress display read while workers write; foreign keys are off by
        # default in SQLite.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
