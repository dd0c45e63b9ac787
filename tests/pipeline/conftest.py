"""Fixtures for running imports against the fakes on every database and store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from imageimport.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on SQLite and on real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    server_url = make_url(request.getfixturevalue("postgres_url"))
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated from the environment and any `.env`, rooted in tmp_path."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            # Explicit, so variables set in the developer's shell cannot leak in.
            "database_url": None,
            "s3_bucket": None,
            "nats_url": None,
            "google_api_key": None,
            "dropbox_app_key": None,
            "dropbox_app_secret": None,
            "dropbox_refresh_token": None,
            "data_dir": tmp_path / "data",
            "source_retry_max_wait_seconds": 0.5,
            "concurrency": 4,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build
