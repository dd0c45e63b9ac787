"""Sessions and the errors they raise: SQLAlchemy's errors arrive as ours, and a concurrent
caller recording the same external id finds the same import."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select

from imageimport import db
from imageimport.db.models import Import
from imageimport.errors import DatabaseError, DatabaseUnavailable
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.sources.registry import parse_folder_url

FOLDER = parse_folder_url(
    "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
)
PASSWORD = "db-pw-4471"


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(database_url=database_url), housekeeping=False)
    yield runtime
    runtime.close()


def test_an_unreachable_database_is_unavailable_named_without_its_password(
    make_settings: Callable[..., Settings],
) -> None:
    # Nothing listens on port 1: every connection is refused.
    url = f"postgresql://imageimport:{PASSWORD}@127.0.0.1:1/imageimport"
    engine = db.make_engine(make_settings(database_url=url))
    try:
        for attempt in (lambda: db.upgrade(engine), lambda: db.ping(engine)):
            with pytest.raises(DatabaseUnavailable) as raised:
                attempt()
            message = str(raised.value)
            assert message.startswith("Cannot use the database at postgresql+psycopg2://")
            assert "imageimport:***@127.0.0.1:1/imageimport" in message
            assert PASSWORD not in message
            assert raised.value.kind == "OperationalError"
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_statement_is_a_database_error_of_its_kind(runtime: Runtime) -> None:
    with runtime.session() as session:
        record = db.create_import(session, FOLDER, external_id="uid-1")
    with pytest.raises(DatabaseError) as raised, runtime.session() as session:
        session.add(Import(provider="gdrive", url="u", folder_id="f", external_id="uid-1"))
    assert not isinstance(raised.value, DatabaseUnavailable)
    assert raised.value.kind == "IntegrityError"
    assert str(raised.value).startswith("The database refused a statement: UNIQUE constraint")
    with runtime.session() as session:  # rolled back: the first one alone remains
        assert db.import_id_for(session, "uid-1") == record.id


def test_concurrent_callers_recording_one_external_id_get_one_import(runtime: Runtime) -> None:
    inserted, release = threading.Event(), threading.Event()
    first: list[str] = []

    def record_and_hold() -> None:
        with runtime.session() as session:
            first.append(db.create_import(session, FOLDER, external_id="uid-2").id)
            inserted.set()
            release.wait(30)  # the row stays uncommitted until the other caller is in

    holder = threading.Thread(target=record_and_hold)
    holder.start()
    try:
        assert inserted.wait(30)
        second: list[str] = []
        caller = threading.Thread(
            target=lambda: second.append(_record(runtime, "uid-2")), daemon=True
        )
        caller.start()
        # The second caller cannot finish before the first commits (it waits for the row, or
        # for the lock); whenever the release comes, both end with the first one's import.
        caller.join(0.5)
        release.set()
        caller.join(60)
    finally:
        release.set()
        holder.join(60)
    assert second == first
    with runtime.session() as session:
        count = select(func.count()).select_from(Import).where(Import.external_id == "uid-2")
        assert session.scalar(count) == 1


def _record(runtime: Runtime, external_id: str) -> str:
    with runtime.session() as session:
        return db.create_import(session, FOLDER, external_id=external_id).id
