"""`imageimport dev-stack` as users run it: real servers, the API and workers, an import
through them, a restart on the same data, and a clean stop that leaves no process behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

from imageimport.settings import Settings
from tests.commands import run_imageimport
from tests.fakes.folder import big_folder
from tests.pipeline.routes import start_route
from tests.servers import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.nats, pytest.mark.timeout(120)]

FILES = 30
WORKERS = 2


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    summary: str
    env: dict[str, str]  # the exported block
    health_urls: list[str]
    stderr_path: Path

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stderr(self) -> str:
        """Progress and logs, without the access log lines of the test's own polling."""
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if '"GET /' not in line)[-8000:]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Straight under /tmp: as root, PostgreSQL runs as another user who must reach it.
    path = Path(tempfile.mkdtemp(prefix="imageimport-devstack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def clean_environment() -> dict[str, str]:
    """The test process's environment without any imageimport setting it may carry."""
    names = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
    return {k: v for k, v in os.environ.items() if k not in names} | {"PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def dev_stack(
    data_dir: Path, api_port: int, env: dict[str, str], workdir: Path
) -> Iterator[RunningStack]:
    """The stack's stdout is its summary; its stderr (progress and logs) goes to a file."""
    stderr_path = workdir / f"dev-stack-{time.monotonic_ns()}.err"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "imageimport", "dev-stack"),
                *("--data-dir", str(data_dir), "--api-port", str(api_port)),
                *("--workers", str(WORKERS), "--concurrency", "4"),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
            cwd=workdir,
        )
    try:
        assert process.stdout is not None
        summary = _read_summary(process.stdout)
        if process.poll() is not None or "export S3_SECRET_ACCESS_KEY" not in summary:
            process.wait(30)
            raise AssertionError(
                f"dev-stack exited with {process.returncode} before it was ready:\n"
                f"{summary}\n{stderr_path.read_text(errors='replace')[-6000:]}"
            )
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in summary.splitlines()
            if line.startswith("export ")
        )
        health = re.findall(r"http://127\.0\.0\.1:\d+/healthz", summary)
        yield RunningStack(process, summary, exports, health, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()  # its servers and processes die with it (parent-death signal)
            process.wait()


def _read_summary(stdout: IO[str]) -> str:
    """Everything up to the line after the exported block (or the end, if the stack died)."""
    lines: list[str] = []
    for line in stdout:
        lines.append(line)
        if line.startswith("then:"):
            break
    return "".join(lines)


def stop_cleanly(stack: RunningStack) -> None:
    children = stack.descendants()
    names = {child.name() for child in children}
    assert {"postgres", "nats-server", "weed"} <= names, names
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0, stack.stderr()
    left = [child for child in children if child.is_running() and child.status() != "zombie"]
    assert left == [], left
    assert "Everything stopped." in stack.stderr()
    assert "exited with code" not in stack.stderr()  # every worker stopped by itself


def worker_metric(url: str, name: str) -> float:
    text = httpx.get(url.replace("/healthz", "/metrics"), timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for_import(api: str, import_id: str, stack: RunningStack) -> dict[str, Any]:
    deadline = time.monotonic() + 40
    while True:
        record = httpx.get(f"{api}/api/v1/imports/{import_id}", timeout=5).json()
        if record["state"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, f"{record}\n{stack.stderr()}"
        assert stack.process.poll() is None, stack.stderr()
        time.sleep(0.2)


def assert_image_served(api: str, import_id: str) -> None:
    """An image of the import, through the API, from SeaweedFS (a redirect to a signed URL)."""
    page = httpx.get(f"{api}/api/v1/images", params={"import_id": import_id}, timeout=5).json()
    assert len(page["items"]) >= 1
    image = page["items"][0]
    content = httpx.get(
        f"{api}/api/v1/images/{image['id']}/content", follow_redirects=True, timeout=10
    )
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == image["sha256"]


def test_dev_stack_imports_through_its_workers_keeps_its_data_and_stops_cleanly(
    data_dir: Path, tmp_path: Path
) -> None:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    with start_route("gdrive-api", big_folder(FILES, seed=31, name="devstack")) as route:
        # The fake Drive's endpoints and API key reach the workers through the environment.
        env = clean_environment() | route.env
        with dev_stack(data_dir, api_port, env, tmp_path) as stack:
            assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            assert len(stack.health_urls) == WORKERS
            for url in stack.health_urls:
                assert httpx.get(url, timeout=5).json() == {"status": "ok"}
            assert set(stack.env) == {
                "DATABASE_URL",
                "NATS_URL",
                "S3_BUCKET",
                "S3_ENDPOINT_URL",
                "S3_ACCESS_KEY_ID",
                "S3_SECRET_ACCESS_KEY",
            }
            assert (data_dir / "env").read_text().count("export ") == len(stack.env)

            # Another shell with the exported block plans the import; the stack's workers do it.
            planned = run_imageimport(
                "import", route.url, "--detach", env=env | stack.env, cwd=tmp_path, timeout=60
            )
            assert planned.returncode == 0, planned.stderr
            import_id = planned.stdout.strip().splitlines()[-1]
            record = wait_for_import(api, import_id, stack)
            assert record["state"] == "succeeded", record
            assert record["counters"]["imported"] == FILES
            done = 'imageimport_items_total{state="done"}'
            assert sum(worker_metric(url, done) for url in stack.health_urls) == FILES
            assert_image_served(api, import_id)
            # Its API is on loopback, like `serve`: changes need no token (this one is
            # refused for its link, not for the missing token).
            refused = httpx.post(f"{api}/api/v1/imports", json={"url": "nope"}, timeout=10)
            assert refused.status_code == 422, refused.text
            stop_cleanly(stack)
        # The processes' logs were shown prefixed, and kept.
        assert re.search(r"^api +\| .*Uvicorn running", stack.stderr(), re.MULTILINE)
        assert "'worker', '--concurrency', '4'" in (data_dir / "logs" / "worker-1.log").read_text()

        # A second run on the same directory finds the import and its images again.
        with dev_stack(data_dir, api_port, env, tmp_path) as stack:
            record = httpx.get(f"{api}/api/v1/imports/{import_id}", timeout=5).json()
            assert record["state"] == "succeeded"
            assert record["counters"]["imported"] == FILES
            assert_image_served(api, import_id)

            # A process that dies takes the whole stack down, with a non-zero exit.
            children = stack.descendants()
            workers = [c for c in children if "worker" in c.cmdline()]
            assert len(workers) == WORKERS
            workers[-1].kill()
            assert stack.process.wait(60) == 1
            assert f"worker {WORKERS} exited unexpectedly" in stack.stderr()
            assert [c for c in children if c.is_running() and c.status() != "zombie"] == []


def test_dev_stack_refuses_a_busy_api_port(data_dir: Path, tmp_path: Path) -> None:
    api_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", api_port))
        taken.listen()
        done = subprocess.run(
            [
                *(sys.executable, "-m", "imageimport", "dev-stack"),
                *("--data-dir", str(data_dir), "--api-port", str(api_port)),
            ],
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert f"Port {api_port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr
