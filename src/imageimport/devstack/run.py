"""`imageimport dev-stack`: the distributed mode on one machine, without Docker.

Starts PostgreSQL, NATS JetStream and SeaweedFS S3 on 127.0.0.1 with their data under one
directory, migrates, then runs `imageimport api` and N `imageimport worker` processes against
them until Ctrl-C or SIGTERM. A later run with the same directory finds the same data (and,
when they are still free, the same ports)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from imageimport.devstack.logs import LogFollower, emit
from imageimport.devstack.servers import (
    S3_COMPONENTS,
    ManagedProcess,
    NatsServer,
    PostgresServer,
    S3Server,
    Server,
    ServerStartError,
    can_bind,
    free_port,
    reuse_or_free_port,
    wait_until,
)
from imageimport.errors import ConfigError

HOST = "127.0.0.1"
BUCKET = "imageimport"
DATABASE = "imageimport"
# Workers finish the files in hand on SIGTERM; a large file on a slow link takes a while.
WORKER_STOP_TIMEOUT = 90.0
API_STOP_TIMEOUT = 20.0
READY_TIMEOUT = 90.0
# Settings the stack defines for its processes; the user's own values for these would point
# the processes somewhere else (S3_* all belong to the store the stack provides).
_STACK_OWNED = ("DATABASE_URL", "NATS_URL", "HEALTH_PORT", "IMAGEIMPORT_MODE")


@dataclass(frozen=True)
class DevStackOptions:
    data_dir: Path
    api_port: int = 8000
    workers: int = 2
    concurrency: int = 8


class _Interrupted(BaseException):
    """Ctrl-C/SIGTERM during start-up: abandon starting and stop what already runs.
    (A BaseException, so no `except Exception` on the way swallows it.)"""


def run_dev_stack(options: DevStackOptions, out: TextIO | None = None) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until a process dies (exit 1)."""
    return DevStack(options, out or sys.stdout).run()


class DevStack:
    def __init__(self, options: DevStackOptions, out: TextIO) -> None:
        self.options = options
        self.data_dir = options.data_dir.expanduser().absolute()
        self.out = out
        self.servers: dict[str, Server] = {}
        self.api: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self.health_ports: list[int] = []
        self.follower: LogFollower | None = None
        self._phase = "starting"
        self._stop = threading.Event()
        self._force = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True)
            # Ours from the start, so keeping it out of git hides nothing of the user's.
            (self.data_dir / ".gitignore").write_text("# imageimport dev-stack data\n*\n")
        with self._exclusive_lock(), self._signals():
            died: str | None = None
            try:
                if not can_bind(self.options.api_port, HOST):
                    raise ConfigError(
                        f"Port {self.options.api_port} on {HOST} is in use; choose another "
                        "with --api-port."
                    )
                self._start_servers()
                self._create_database()
                self._migrate()
                self._start_app()
                self._wait_ready()
                self._print_summary()
                self._phase = "running"
                died = self._supervise()
                if not died:
                    self._say("Stopping: workers finish their files first (Ctrl-C again to kill).")
            except _Interrupted:
                self._say("Interrupted during start-up; stopping.")
            except ServerStartError as error:
                died = str(error)
            finally:
                self._phase = "stopping"
                self._stop_all()
            if died:
                self._say(f"Error: {died}\nEverything was stopped.")
                return 1
            self._say("Everything stopped.")
            return 0

    @contextlib.contextmanager
    def _exclusive_lock(self) -> Iterator[None]:
        # Two stacks on one data directory would fight over the same PostgreSQL files.
        with (self.data_dir / "dev-stack.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConfigError(
                    f"Another `imageimport dev-stack` is running with {self.data_dir}; stop it "
                    "or choose another --data-dir."
                ) from None
            yield

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._phase == "starting":
                raise _Interrupted
            if self._phase == "running":
                self._stop.set()
            else:
                self._force.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- servers ------------------------------------------------------------------------------

    def _start_servers(self) -> None:
        remembered = self._remembered_ports()
        s3_ports = remembered.get("s3")
        s3_ports = s3_ports if isinstance(s3_ports, dict) else {}
        postgres = PostgresServer(
            self.data_dir / "postgres", reuse_or_free_port(_port(remembered.get("postgres")))
        )
        nats = NatsServer(
            self.data_dir / "nats",
            reuse_or_free_port(_port(remembered.get("nats"))),
            monitor_port=reuse_or_free_port(_port(remembered.get("nats_monitor"))),
            server_name="imageimport-dev",
        )
        s3 = S3Server(
            self.data_dir / "seaweedfs",
            ports={
                name: reuse_or_free_port(_port(s3_ports.get(name)), with_grpc=True)
                for name in S3_COMPONENTS
            },
        )
        self._remember_ports(
            {
                "postgres": postgres.port,
                "nats": nats.port,
                "nats_monitor": nats.monitor_port,
                "s3": s3.ports,
            }
        )
        for name, server in (("PostgreSQL", postgres), ("NATS", nats), ("SeaweedFS", s3)):
            self._say(f"Starting {name}…")
            self.servers[name] = server
            server.start()

    @property
    def _ports_file(self) -> Path:
        return self.data_dir / "ports.json"

    def _remembered_ports(self) -> dict[str, Any]:
        try:
            ports = json.loads(self._ports_file.read_text())
        except (OSError, ValueError):
            return {}
        return ports if isinstance(ports, dict) else {}

    def _remember_ports(self, ports: dict[str, Any]) -> None:
        self._ports_file.write_text(json.dumps(ports, indent=2) + "\n")

    def _create_database(self) -> None:
        import psycopg2

        try:
            connection = psycopg2.connect(
                host=HOST, port=self._postgres.port, user="postgres", dbname="postgres"
            )
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{DATABASE}"')
            finally:
                connection.close()
        except psycopg2.Error as error:
            raise ServerStartError(f"Creating the {DATABASE} database failed: {error}") from error

    def _migrate(self) -> None:
        self._say("Migrating the database…")
        log_path = self._log_path("migrate")
        with log_path.open("ab") as log:
            done = subprocess.run(
                self._command("migrate"),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ServerStartError(f"`imageimport migrate` failed:\n{tail}")

    # -- the application ------------------------------------------------------------------------

    @property
    def _postgres(self) -> PostgresServer:
        server = self.servers["PostgreSQL"]
        assert isinstance(server, PostgresServer)
        return server

    @property
    def _nats(self) -> NatsServer:
        server = self.servers["NATS"]
        assert isinstance(server, NatsServer)
        return server

    @property
    def _s3(self) -> S3Server:
        server = self.servers["SeaweedFS"]
        assert isinstance(server, S3Server)
        return server

    def stack_env(self) -> dict[str, str]:
        """What another shell needs to use this stack (`imageimport import`, `images`…)."""
        return {
            "DATABASE_URL": f"postgresql://postgres@{HOST}:{self._postgres.port}/{DATABASE}",
            "NATS_URL": self._nats.url,
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": self._s3.endpoint_url,
            "S3_ACCESS_KEY_ID": self._s3.access_key,
            "S3_SECRET_ACCESS_KEY": self._s3.secret_key,
        }

    def _env(self, **extra: str) -> dict[str, str]:
        # Everything else the user has set (GOOGLE_API_KEY, DROPBOX_*, GDRIVE_*_URL, limits…)
        # reaches the processes unchanged.
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key not in _STACK_OWNED and not key.startswith("S3_")
        }
        return inherited | self.stack_env() | {"PYTHONUNBUFFERED": "1"} | extra

    def _command(self, *args: str) -> list[str]:
        verbose = ["-v"] if logging.getLogger().isEnabledFor(logging.INFO) else []
        return [sys.executable, "-m", "imageimport", *verbose, *args]

    def _log_path(self, name: str) -> Path:
        path = self.data_dir / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _start_app(self) -> None:
        options = self.options
        # Like `imageimport serve`, the stack's API listens on loopback only: anyone on this
        # machine may make changes, unless the user's own ALLOW_ANONYMOUS or API_TOKEN says
        # otherwise (a token always wins).
        anonymous = {} if "ALLOW_ANONYMOUS" in os.environ else {"ALLOW_ANONYMOUS": "true"}
        self.api = ManagedProcess(
            self._command("api", "--host", HOST, "--port", str(options.api_port)),
            self._log_path("api"),
            env=self._env(**anonymous),
        )
        for number in range(1, options.workers + 1):
            health_port = free_port()
            self.health_ports.append(health_port)
            self.workers.append(
                ManagedProcess(
                    self._command("worker", "--concurrency", str(options.concurrency)),
                    self._log_path(f"worker-{number}"),
                    env=self._env(HEALTH_PORT=str(health_port)),
                )
            )
        sources = {"api": self.api.log_path}
        sources |= {f"worker-{n}": w.log_path for n, w in enumerate(self.workers, 1)}
        self.follower = LogFollower(sources, sys.stderr)
        self.follower.start()
        self._say(f"Starting the API and {options.workers} worker(s)…")
        for process in (self.api, *self.workers):
            process.start()

    def _wait_ready(self) -> None:
        assert self.api is not None
        wait_until(partial(_answers, f"{self.api_url}/readyz"), self.api, "The API", READY_TIMEOUT)
        ports = zip(self.workers, self.health_ports, strict=True)
        for number, (worker, port) in enumerate(ports, 1):
            url = f"http://{HOST}:{port}/healthz"
            wait_until(partial(_answers, url), worker, f"Worker {number}", READY_TIMEOUT)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.options.api_port}"

    def _print_summary(self) -> None:
        env = self.stack_env()
        exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
        env_file = self.data_dir / "env"
        env_file.write_text(exports + "\n")
        env_file.chmod(0o600)
        health = ", ".join(f"http://{HOST}:{port}/healthz" for port in self.health_ports)
        rows = [
            ("API", f"{self.api_url}  (page /, docs /docs, readiness /readyz)"),
            (
                "workers",
                f"{len(self.workers)} x {self.options.concurrency} files at a time; "
                f"health {health} (metrics: /metrics)",
            ),
            ("PostgreSQL", env["DATABASE_URL"]),
            ("NATS", f"{self._nats.url}  (monitoring {self._nats.monitor_url})"),
            ("S3", f"{self._s3.endpoint_url}  bucket {BUCKET}  (SeaweedFS)"),
            ("data, logs", f"{self.data_dir}, {self.data_dir / 'logs'}"),
        ]
        table = "\n".join(f"  {label:<12} {value}" for label, value in rows)
        self.out.write(
            f"\nimageimport dev-stack is ready. Ctrl-C stops everything.\n\n{table}\n\n"
            f"To use it from another shell, run these (or `. {shlex.quote(str(env_file))}`):\n\n"
            f"{exports}\n\n"
            'then: imageimport import --detach "<folder link>"   '
            f"or: curl -X POST {self.api_url}/api/v1/imports -H 'Content-Type: "
            'application/json\' -d \'{"url": "<folder link>"}\'\n\n'
        )
        self.out.flush()

    # -- running and stopping -----------------------------------------------------------------

    def _supervise(self) -> str | None:
        """Wait for a stop signal; a process that exits before it is the stack failing."""
        watched = [(name, server.process) for name, server in self.servers.items()]
        assert self.api is not None
        watched.append(("the API", self.api))
        watched += [(f"worker {n}", worker) for n, worker in enumerate(self.workers, 1)]
        while not self._stop.wait(0.5):
            for name, process in watched:
                if not process.running():
                    return (
                        f"{name} exited unexpectedly (exit code {process.returncode}); "
                        f"last lines of {process.log_path}:\n{process.log_tail(20)}"
                    )
        return None

    def _stop_all(self) -> None:
        # Workers first, so they can still settle their files in the database and the store.
        self._stop_group(self.workers, WORKER_STOP_TIMEOUT)
        self._stop_group([self.api] if self.api else [], API_STOP_TIMEOUT)
        for number, worker in enumerate(self.workers, 1):
            if worker.returncode not in (None, 0):
                self._say(f"worker {number} exited with code {worker.returncode}")
        for server in reversed(self.servers.values()):
            server.stop()
        if self.follower is not None:
            self.follower.stop()

    def _stop_group(self, processes: list[ManagedProcess], timeout: float) -> None:
        for process in processes:
            process.request_stop()
        deadline = time.monotonic() + timeout
        for process in processes:
            while process.running() and time.monotonic() < deadline and not self._force.is_set():
                time.sleep(0.1)
            process.kill()

    def _say(self, message: str) -> None:
        # Progress goes to stderr with the logs; stdout carries only the summary.
        emit(sys.stderr, f"[dev-stack] {message}")


def _port(value: object) -> int | None:
    """A port remembered from an earlier run, if the file still holds a sensible one."""
    return value if isinstance(value, int) and 1024 < value < 55536 else None


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200
