"""Engines and sessions for SQLite (embedded default) and PostgreSQL; every session opened
here turns SQLAlchemy's errors into ours (see `errors.database_errors`)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import URL, Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from imageimport.db.errors import database_errors
from imageimport.db.models import Base
from imageimport.errors import ConfigError
from imageimport.settings import Settings

Sessions = sessionmaker[Session]


def make_engine(settings: Settings) -> Engine:
    url = _parse(settings.effective_database_url)
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


def database_backend(database_url: str) -> str:
    """ "sqlite", "postgresql"… : the kind of database a DATABASE_URL names."""
    return _parse(database_url).get_backend_name()


def _parse(raw: str) -> URL:
    try:
        return make_url(raw)
    except (ArgumentError, ValueError):
        # from None: the cause would quote the URL, password included.
        raise ConfigError("DATABASE_URL is not a valid database URL.") from None


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


def make_session_factory(engine: Engine) -> Sessions:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: Sessions) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = sessions()
    with database_errors(_engine_of(session)), session, session.begin():
        yield session


@contextmanager
def reading(sessions: Sessions) -> Iterator[Session]:
    """A session that commits nothing unless its user does; rolled back and closed at the
    end (one per API request)."""
    session = sessions()
    with database_errors(_engine_of(session)), session:
        yield session


def ping(engine: Engine) -> None:
    """Ask the database one trivial question (readiness probes)."""
    with database_errors(engine), engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _engine_of(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def insert_unless_present(
    session: Session, model: type[Base], *unique: str, returning: str | None = None
) -> Insert:
    """INSERT INTO the model's table … ON CONFLICT (`unique`) DO NOTHING [RETURNING
    `returning`], in the session's dialect (both of ours say it the same way). Built once per
    dialect: the values are given when it is executed."""
    table = cast(Table, model.__table__)  # a declarative model's is always a Table
    return _insert_unless_present(session.get_bind().dialect.name, table, unique, returning)


@functools.cache
def _insert_unless_present(
    dialect: str, table: Table, unique: tuple[str, ...], returning: str | None
) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).on_conflict_do_nothing(index_elements=unique)
    return statement.returning(table.c[returning]) if returning else statement
