"""The distributed mode on one machine: worker processes, a planner process, and helpers to
watch an import through the database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
from sqlalchemy import create_engine, func, select, text

from imageimport.db.models import TERMINAL_IMPORT_STATES, Image, Import, ImportItem
from imageimport.queue.nats import STREAM
from tests.commands import run_imageimport
from tests.servers import free_port, unique_bucket_name


def purge_stream(nats_url: str) -> None:
    """Tests share one NATS server: each distributed test starts from an empty stream."""

    async def purge() -> None:
        nc = await nats.connect(nats_url)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(STREAM)
        await nc.close()

    asyncio.run(purge())


def stream_last_sequence(nats_url: str) -> int:
    """How many messages were ever stored (de-duplicated publishes do not count)."""

    async def read() -> int:
        nc = await nats.connect(nats_url)
        info = await nc.jetstream().stream_info(STREAM)
        await nc.close()
        return int(info.state.last_seq)

    return asyncio.run(read())


class Cluster:
    """Environment shared by every process of one test, and the worker processes."""

    def __init__(
        self, tmp: Path, database_url: str, nats_url: str, s3: Any, source_env: dict[str, str]
    ) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.nats_url = nats_url
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "NATS_", "S3_", "GDRIVE_", "DROPBOX_", "GOOGLE_"))
        }
        self.env = (
            base
            | source_env
            | {
                "DATABASE_URL": database_url,
                "NATS_URL": nats_url,
                "S3_BUCKET": unique_bucket_name(),
                "S3_ENDPOINT_URL": s3.endpoint_url,
                "S3_ACCESS_KEY_ID": s3.access_key,
                "S3_SECRET_ACCESS_KEY": s3.secret_key,
                "DATA_DIR": str(tmp / "data"),
                "SOURCE_RETRY_MAX_WAIT_SECONDS": "1",
                "NATS_ACK_WAIT_SECONDS": "10",
                "PYTHONUNBUFFERED": "1",
                "PYTHONFAULTHANDLER": "1",  # SIGABRT dumps every thread's stack into the log
            }
        )
        self.workers: list[subprocess.Popen[bytes]] = []
        self._log_paths: dict[int, Path] = {}
        self.engine = create_engine(database_url)

    def command(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        path = self.tmp / f"{args[0]}-{len(self.workers)}-{time.monotonic_ns()}.log"
        log = open(path, "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "imageimport", "-v", *args],
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        self._log_paths[process.pid] = path
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        """Everything a process started by `command` has printed so far."""
        return self._log_paths[process.pid].read_text(errors="replace")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_imageimport(*args, env=self.env, cwd=self.tmp, timeout=timeout)

    def start_worker(self, concurrency: int = 8) -> subprocess.Popen[bytes]:
        worker = self.command(
            "worker", "--concurrency", str(concurrency), HEALTH_PORT=str(free_port())
        )
        self.workers.append(worker)
        return worker

    def plan(self, url: str) -> str:
        done = self.run("import", url, "--detach")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def state(self, import_id: str) -> tuple[str, dict[str, int]]:
        with self.engine.connect() as connection:
            state = connection.scalar(select(Import.state).where(Import.id == import_id))
            rows = connection.execute(
                select(ImportItem.state, func.count())
                .where(ImportItem.import_id == import_id)
                .group_by(ImportItem.state)
            ).all()
        return str(state), {s: int(n) for s, n in rows}

    def wait_until(self, import_id: str, predicate: Any, timeout: float = 240) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            state, counts = self.state(import_id)
            if predicate(state, counts):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out in state {state} with {counts}\n{self.logs()}")
            for worker in self.workers:
                code = worker.poll()
                if code not in (None, 0, -signal.SIGKILL):
                    raise AssertionError(f"a worker exited with {code}\n{self.logs()}")
            time.sleep(0.2)

    def wait_finished(self, import_id: str, timeout: float = 240) -> dict[str, int]:
        return self.wait_until(import_id, lambda state, _: state in TERMINAL_IMPORT_STATES, timeout)

    def images(self) -> list[tuple[str, str, str]]:
        with self.engine.connect() as connection:
            return [
                (r.sha256, r.object_key, r.thumbnail_key)
                for r in connection.execute(
                    select(Image.sha256, Image.object_key, Image.thumbnail_key)
                )
            ]

    def drop_database_connections(self) -> int:
        with self.engine.connect() as connection:
            dropped = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        return int(dropped)

    def wait_exit(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            process.wait(10)
            raise AssertionError(f"still running after {timeout} s\n{self.logs()}") from None

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp.glob("*.log")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.engine.dispose()
