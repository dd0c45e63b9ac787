"""SQLAlchemy's errors turned into ours, in this one place (as httpx's
`map_httpcore_exceptions` does for httpcore): outside db/, only `DatabaseError` and
`DatabaseUnavailable` from `imageimport.errors` are ever seen, so nothing there needs
SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, exc

from imageimport.errors import DatabaseError, DatabaseUnavailable

# The database cannot be used right now: unreachable, gone mid-statement, not answering in
# time, locked, or without its tables (the DB-API files all of these as OperationalError).
_UNAVAILABLE = (exc.OperationalError, exc.TimeoutError, exc.DisconnectionError)


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Raise what SQLAlchemy raises inside as a DatabaseError, or DatabaseUnavailable when
    the database at `engine` cannot be used right now."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise translated(error, engine) from error


def translated(error: exc.SQLAlchemyError, engine: Engine) -> DatabaseError:
    # SQLAlchemy's class names follow the DB-API's (OperationalError, IntegrityError…).
    kind = type(error).__name__
    cause = _first_line(error)
    unavailable = isinstance(error, _UNAVAILABLE) or (
        isinstance(error, exc.DBAPIError) and error.connection_invalidated
    )
    if unavailable:
        where = engine.url.render_as_string(hide_password=True)
        return DatabaseUnavailable(f"Cannot use the database at {where}: {cause}.", kind)
    return DatabaseError(f"The database refused a statement: {cause}.", kind)


def _first_line(error: exc.SQLAlchemyError) -> str:
    """The driver's own words, without the statement, its values or SQLAlchemy's links."""
    original = error.orig if isinstance(error, exc.DBAPIError) else None
    text = str(original) if original is not None else str(error.args[0] if error.args else "")
    lines = text.strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else "no details"
