"""The real servers the fixtures start: they answer, and they survive restarts with their data."""

from __future__ import annotations

import asyncio
import uuid

import nats
import nats.errors
import pytest
import sqlalchemy as sa
from nats.js.api import StreamConfig

from imageimport.settings import Settings
from imageimport.storage.s3 import S3Store
from tests import servers


def _skip_if_external(server: object) -> None:
    if getattr(server, "external", False):
        pytest.skip("the server comes from the environment; this test restarts servers")


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_answers_over_sqlalchemy(postgres_server: servers.PostgresServer) -> None:
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as connection:
            version = connection.execute(sa.text("select version()")).scalar_one()
    finally:
        engine.dispose()
    assert "PostgreSQL" in version
    if not postgres_server.external:
        assert "PostgreSQL 18" in version
        assert postgres_server.url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")


@pytest.mark.postgres
def test_postgres_keeps_committed_data_across_a_crash(
    postgres_server: servers.PostgresServer,
) -> None:
    _skip_if_external(postgres_server)
    table = f"crash_{uuid.uuid4().hex[:8]}"
    url_before = postgres_server.url
    engine = sa.create_engine(postgres_server.url, pool_pre_ping=True)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"create table {table} (value text)"))
            connection.execute(sa.text(f"insert into {table} values ('kept')"))
        pid_before = postgres_server.pid

        postgres_server.kill()
        postgres_server.start()

        assert postgres_server.url == url_before
        assert postgres_server.pid != pid_before
        with engine.connect() as connection:
            assert connection.execute(sa.text(f"select value from {table}")).scalar_one() == "kept"
            connection.execute(sa.text(f"drop table {table}"))
            connection.commit()
    finally:
        engine.dispose()


# -- NATS ---------------------------------------------------------------------------------------


async def _publish_and_take_one(url: str, stream: str, subject: str) -> list[bytes]:
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        await jetstream.add_stream(StreamConfig(name=stream, subjects=[subject]))
        for number in range(3):
            await jetstream.publish(subject, f"message {number}".encode())
        subscription = await jetstream.pull_subscribe(subject, durable="worker")
        messages = await subscription.fetch(1, timeout=5)
        for message in messages:
            await message.ack_sync()
        return [message.data for message in messages]
    finally:
        await client.close()


async def _take_the_rest(url: str, stream: str, subject: str) -> tuple[int, list[bytes]]:
    """(messages stored in the stream, every message the durable consumer still delivers)."""
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        info = await jetstream.stream_info(stream)
        subscription = await jetstream.pull_subscribe(subject, durable="worker")
        received: list[bytes] = []
        while True:
            try:
                messages = await subscription.fetch(3, timeout=1)
            except nats.errors.TimeoutError:
                break
            for message in messages:
                received.append(message.data)
                await message.ack_sync()
        await jetstream.delete_stream(stream)
        return info.state.messages, received
    finally:
        await client.close()


def test_nats_jetstream_works_and_survives_a_restart(nats_server: servers.NatsServer) -> None:
    stream = f"TEST_{uuid.uuid4().hex[:8]}"
    subject = f"{stream.lower()}.jobs"

    first = asyncio.run(_publish_and_take_one(nats_server.url, stream, subject))
    assert first == [b"message 0"]

    if nats_server.external:
        asyncio.run(_take_the_rest(nats_server.url, stream, subject))
        pytest.skip("NATS comes from the environment; not restarting it")
    url_before, pid_before = nats_server.url, nats_server.pid
    nats_server.restart()
    assert nats_server.url == url_before
    assert nats_server.pid != pid_before

    stored, rest = asyncio.run(_take_the_rest(nats_server.url, stream, subject))
    assert stored == 3
    # The durable consumer remembered the ack from before the restart.
    assert rest == [b"message 1", b"message 2"]


def test_nats_survives_being_killed(nats_server: servers.NatsServer) -> None:
    _skip_if_external(nats_server)
    stream = f"TEST_{uuid.uuid4().hex[:8]}"
    subject = f"{stream.lower()}.jobs"
    asyncio.run(_publish_and_take_one(nats_server.url, stream, subject))

    nats_server.kill()
    nats_server.start()

    stored, rest = asyncio.run(_take_the_rest(nats_server.url, stream, subject))
    assert stored == 3
    # A killed server may forget an acknowledgement it had not written yet and deliver that
    # message again: at least once, never lost. Consumers must be idempotent.
    assert rest in ([b"message 1", b"message 2"], [b"message 0", b"message 1", b"message 2"])


# -- SeaweedFS ----------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_seaweedfs_keeps_objects_across_restarts(
    s3_server: servers.S3Server, s3_settings: Settings, how: str
) -> None:
    _skip_if_external(s3_server)
    store = S3Store(s3_settings)
    store.put_bytes("before/restart.jpg", b"still here", "image/jpeg")
    endpoint, pid_before = s3_server.endpoint_url, s3_server.pid

    getattr(s3_server, how)()
    s3_server.start()

    assert s3_server.endpoint_url == endpoint
    assert s3_server.pid != pid_before
    assert b"".join(store.iter_bytes("before/restart.jpg")) == b"still here"
    store.put_bytes("after/restart.jpg", b"new", "image/jpeg")
    assert sorted(store.list_keys()) == ["after/restart.jpg", "before/restart.jpg"]


# -- environment overrides ------------------------------------------------------------------


def test_environment_names_external_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert servers.external_postgres() is None
    assert servers.external_nats() is None
    assert servers.external_s3() is None

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u@db:5432/x")
    monkeypatch.setenv("NATS_URL", "nats://queue:4222")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://s3:8333")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "secret")
    postgres, queue, s3 = (
        servers.external_postgres(),
        servers.external_nats(),
        servers.external_s3(),
    )
    assert postgres is not None and postgres.url == "postgresql+psycopg2://u@db:5432/x"
    assert queue is not None and queue.url == "nats://queue:4222"
    assert s3 is not None and (s3.endpoint_url, s3.access_key, s3.secret_key) == (
        "http://s3:8333",
        "id",
        "secret",
    )
    with pytest.raises(servers.ExternalServerError):
        queue.restart()


def test_free_ports_leave_room_for_grpc() -> None:
    port = servers.free_port(with_grpc=True)
    assert port + 10000 < 32768  # below the ephemeral range, so no client can take it
    assert servers.free_port(with_grpc=True) != port
