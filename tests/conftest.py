"""Shared fixtures. Real servers start lazily (only when a test asks) and stop at session end."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from imageimport.settings import Settings
from tests import servers

# -- markers --------------------------------------------------------------------------------

# A test that uses a real server gets that server's marker, so `-m "not s3"` deselects it.
_MARKER_OF_FIXTURE = {
    "postgres_server": "postgres",
    "postgres_url": "postgres",
    "s3_server": "s3",
    "s3_settings": "s3",
    "postgres_database": "postgres",
    "nats_server": "nats",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, marker in _MARKER_OF_FIXTURE.items():
            if fixture in fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


# -- real servers (session scoped) ----------------------------------------------------------


@contextlib.contextmanager
def _server_dir(name: str) -> Iterator[Path]:
    # Straight under /tmp, not pytest's 0700 tmp tree: PostgreSQL runs as another user and
    # must traverse every parent; also keeps socket paths short.
    path = Path(tempfile.mkdtemp(prefix=f"imageimport-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.PostgresServer | servers.ExternalPostgres]:
    """PostgreSQL 18 over TCP on 127.0.0.1 (or the one DATABASE_URL names). `.url` is a
    `postgresql+psycopg2://` SQLAlchemy URL; `.stop()`, `.kill()`, `.start()` for crash tests."""
    external = servers.external_postgres()
    if external:
        yield external
        return
    with _server_dir("postgres") as base, servers.PostgresServer(base) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: servers.PostgresServer | servers.ExternalPostgres) -> str:
    return postgres_server.url


@pytest.fixture(scope="session")
def nats_server() -> Iterator[servers.NatsServer | servers.ExternalNats]:
    """NATS with JetStream (or the one NATS_URL names): `.url`, `.monitor_url`, and
    `.stop()`, `.kill()`, `.start()`, `.restart()` on the same port and storage."""
    external = servers.external_nats()
    if external:
        yield external
        return
    with _server_dir("nats") as base, servers.NatsServer(base) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[servers.S3Server | servers.ExternalS3]:
    """SeaweedFS S3 with credentials (or the one S3_ENDPOINT_URL names): `.endpoint_url`,
    `.access_key`, `.secret_key`, `.client()`, and `.stop()`, `.kill()`, `.start()`."""
    external = servers.external_s3()
    if external:
        yield external
        return
    with _server_dir("seaweedfs") as base, servers.S3Server(base) as server:
        yield server


# -- per-test settings --------------------------------------------------------------------


@pytest.fixture
def s3_settings(
    s3_server: servers.S3Server | servers.ExternalS3, tmp_path: Path
) -> Iterator[Settings]:
    """Settings pointing at the S3 server with a bucket of this test's own (not yet created;
    the store creates it on first use). Vary it with `s3_settings.model_copy(update={...})`."""
    bucket = servers.unique_bucket_name()
    yield Settings(
        data_dir=tmp_path,
        s3_bucket=bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
    )
    if s3_server.external:
        _delete_bucket(s3_server, bucket)


def _delete_bucket(s3_server: servers.ExternalS3, bucket: str) -> None:
    """Leave a shared external server as we found it; a test that broke it may make this fail."""
    with contextlib.suppress(Exception):
        client = s3_server.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)


# -- databases and settings for pipeline, CLI and API tests -----------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database, once on SQLite and once on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own."""
    server_url = make_url(postgres_url)
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
