"""The schema the migrations make is the one the models describe, on SQLite and PostgreSQL,
and its columns hand back what the models promise: aware UTC datetimes, declared states."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from imageimport import db
from imageimport.db.migrate import alembic_config
from imageimport.db.models import Base, Image, Import
from imageimport.errors import DatabaseError
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.sources.registry import parse_folder_url

FOLDER = parse_folder_url(
    "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
)


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(database_url=database_url), housekeeping=False)
    yield runtime
    runtime.close()


def test_the_migrations_make_the_schema_of_the_models(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_unchanged_files_migration_keeps_what_was_recorded_and_goes_back(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    engine = db.make_engine(make_settings(database_url=database_url))
    try:
        db.upgrade(engine, "0001")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO imports (id, provider, url, folder_id, state, options, round, "
                    "created_at) VALUES ('i', 'gdrive', 'u', 'f', 'succeeded', '{}', 0, "
                    "CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO import_items (import_id, remote_id, name, path, extra, state, "
                    "attempts, updated_at) VALUES ('i', 'r', 'n', 'p', '{}', 'done', 0, "
                    "CURRENT_TIMESTAMP)"
                )
            )
        db.upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT remote_id, modified FROM import_items"))
            assert rows.all() == [("r", None)]
        indexes = {index["name"] for index in inspect(engine).get_indexes("imports")}
        assert "ix_imports_provider_folder_id" in indexes

        command.downgrade(alembic_config(engine), "0001")
        columns = {column["name"] for column in inspect(engine).get_columns("import_items")}
        assert "modified" not in columns
        with engine.connect() as connection:
            assert connection.execute(text("SELECT remote_id FROM import_items")).all() == [("r",)]
        db.upgrade(engine)
    finally:
        engine.dispose()


def _image(sha: str, taken_at: datetime | None, import_id: str) -> db.NewImage:
    return db.NewImage(
        sha256=sha,
        object_key=f"images/{sha}.png",
        thumbnail_key=f"images/{sha}.thumb.webp",
        size=1,
        content_type="image/png",
        width=1,
        height=1,
        format="PNG",
        taken_at=taken_at,
        camera=None,
        name="a.png",
        path="a.png",
        provider="gdrive",
        source_file_id="f",
        import_id=import_id,
    )


def test_moments_come_back_as_aware_utc_datetimes(runtime: Runtime) -> None:
    # 11:30 at UTC+02:00 is 09:30 UTC: stored as that moment, whatever zone it came in.
    taken = datetime(2021, 7, 14, 11, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    with runtime.session() as session:
        import_id = db.create_import(session, FOLDER).id
        image_id, _ = db.insert_image(session, _image("a" * 64, taken, import_id))
    with runtime.session() as session:
        record = db.get_import(session, import_id)
        image = db.get_image(session, image_id)
        assert record is not None and image is not None
        moments = [record.created_at, image.created_at, image.taken_at]
        assert all(m is not None and m.tzinfo is UTC for m in moments)
        assert image.taken_at == datetime(2021, 7, 14, 9, 30, 5, tzinfo=UTC)
        # And queries compare moments, not wall-clock readings.
        after = datetime(2021, 7, 14, 10, 0, tzinfo=timezone(timedelta(hours=1)))  # 09:00 UTC
        assert session.scalars(select(Image.id).where(Image.taken_at >= after)).all() == [image_id]


def test_a_naive_datetime_is_refused_rather_than_guessed(runtime: Runtime) -> None:
    with runtime.session() as session:
        import_id = db.create_import(session, FOLDER).id
    naive = _image("b" * 64, datetime(2021, 7, 14, 9, 30), import_id)
    with pytest.raises(DatabaseError), runtime.session() as session:
        db.insert_image(session, naive)


def test_states_are_the_declared_ones(runtime: Runtime) -> None:
    with runtime.session() as session:
        import_id = db.create_import(session, FOLDER).id
    with pytest.raises(DatabaseError), runtime.session() as session:
        session.execute(
            Import.__table__.update().where(Import.id == import_id).values(state="paused")
        )
    with runtime.session() as session:
        # Stored as the plain strings the first migration's VARCHAR columns always held.
        raw = session.scalar(text("SELECT state FROM imports WHERE id = :id"), {"id": import_id})
        assert raw == "pending"
