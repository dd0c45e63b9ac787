"""The real servers for tests: `imageimport.devstack.servers`, tuned for tests, plus servers
named by the environment.

When DATABASE_URL / NATS_URL / S3_ENDPOINT_URL are set, `external_*` helpers describe those
servers instead, and the fixtures in conftest.py use them rather than starting their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageimport.devstack import servers as _servers
from imageimport.devstack.servers import (
    ManagedProcess,
    NatsServer,
    ServerStartError,
    free_port,
)

__all__ = [
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "ExternalNats",
    "ExternalPostgres",
    "ExternalS3",
    "ExternalServerError",
    "ManagedProcess",
    "NatsServer",
    "PostgresServer",
    "S3Server",
    "ServerStartError",
    "external_nats",
    "external_postgres",
    "external_s3",
    "free_port",
    "start_nats",
    "start_postgres",
    "start_seaweedfs",
    "unique_bucket_name",
]

TEST_ACCESS_KEY = "imageimport-test"
TEST_SECRET_KEY = "imageimport-test-secret-key"  # a throwaway credential for a local server


class PostgresServer(_servers.PostgresServer):
    """Without fsync: tests never cut the power, and a SIGKILL still loses no commit."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        super().__init__(base_dir, port, fsync=False)


class S3Server(_servers.S3Server):
    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY)


class ExternalServerError(RuntimeError):
    """A test tried to stop or restart a server it did not start."""


class _ExternalServer:
    """A server given by environment variables: usable, but not ours to stop or restart."""

    external = True
    pid = None

    def _refuse(self) -> None:
        raise ExternalServerError(
            f"{type(self).__name__} points at a server this test run did not start; "
            "it cannot be stopped, killed or restarted."
        )

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._refuse()

    def kill(self) -> None:
        self._refuse()

    def restart(self) -> None:
        self._refuse()


@dataclass
class ExternalPostgres(_ExternalServer):
    url: str


@dataclass
class ExternalNats(_ExternalServer):
    url: str
    monitor_url: str | None = None


@dataclass
class ExternalS3(_ExternalServer):
    endpoint_url: str
    access_key: str | None
    secret_key: str | None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


def unique_bucket_name() -> str:
    """A valid bucket name no other test uses, so tests never see each other's objects."""
    return f"test-{uuid.uuid4().hex[:24]}"


def start_postgres(tmpdir: Path) -> tuple[str, Callable[[], None]]:
    """Start PostgreSQL under `tmpdir`: (SQLAlchemy psycopg2 URL, stop function)."""
    server = PostgresServer(tmpdir)
    server.start()
    return server.url, server.stop


def start_nats(tmpdir: Path) -> tuple[str, str, Callable[[], None]]:
    """Start NATS JetStream under `tmpdir`: (nats:// URL, monitoring URL, stop function)."""
    server = NatsServer(tmpdir)
    server.start()
    return server.url, server.monitor_url, server.stop


def start_seaweedfs(tmpdir: Path) -> S3Server:
    """Start SeaweedFS (S3 API with credentials) under `tmpdir`; `.stop()` it when done."""
    server = S3Server(tmpdir)
    server.start()
    return server


# -- environment overrides ----------------------------------------------------------------


def external_postgres() -> ExternalPostgres | None:
    url = os.environ.get("DATABASE_URL")
    return ExternalPostgres(url) if url else None


def external_nats() -> ExternalNats | None:
    url = os.environ.get("NATS_URL")
    return ExternalNats(url, os.environ.get("NATS_MONITOR_URL")) if url else None


def external_s3() -> ExternalS3 | None:
    url = os.environ.get("S3_ENDPOINT_URL")
    if not url:
        return None
    return ExternalS3(
        url, os.environ.get("S3_ACCESS_KEY_ID"), os.environ.get("S3_SECRET_ACCESS_KEY")
    )
