"""`imageimport worker` as a process: configuration errors, health, metrics, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands import run_imageimport
from tests.distributed.cluster import Cluster, purge_stream
from tests.fakes.folder import big_folder
from tests.pipeline.routes import start_route
from tests.servers import free_port


def test_worker_without_nats_url_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    done = run_imageimport("worker", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "needs NATS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_rejects_a_bad_setting_by_name(tmp_path: Path) -> None:
    env = os.environ | {"NATS_URL": "nats://127.0.0.1:1", "MAX_DELIVER": "0"}
    done = run_imageimport("worker", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "MAX_DELIVER" in done.stderr


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.nats
@pytest.mark.timeout(300)
def test_sigterm_finishes_files_in_hand_and_exits_zero(
    tmp_path: Path, postgres_database: str, nats_server: Any, s3_server: Any
) -> None:
    purge_stream(nats_server.url)
    with start_route("gdrive-api", big_folder(400, seed=21)) as route:
        route.faults.latency = 0.05  # each file takes a while: some are in hand at SIGTERM
        cluster = Cluster(tmp_path, postgres_database, nats_server.url, s3_server, route.env)
        try:
            port = free_port()
            worker = cluster.command("worker", "--concurrency", "8", HEALTH_PORT=str(port))
            cluster.workers.append(worker)
            health = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{health}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, cluster.logs()
                time.sleep(0.2)
            import_id = cluster.plan(route.url)
            cluster.wait_until(import_id, lambda _, c: c.get("done", 0) >= 50)
            metrics = httpx.get(f"{health}/metrics", timeout=5).text
            assert 'imageimport_items_total{state="done"}' in metrics
            assert "imageimport_items_in_flight" in metrics

            worker.send_signal(signal.SIGTERM)
            assert cluster.wait_exit(worker, 60) == 0, cluster.logs()
            _, counts = cluster.state(import_id)
            # Stopped part-way, with every file it had started settled, none half-done.
            assert 0 < counts.get("done", 0) < 400
            assert "stopping: finishing the files in hand" in cluster.logs()

            cluster.start_worker()
            counts = cluster.wait_finished(import_id)
            assert counts == {"done": 400}
            assert len(cluster.images()) == 400
        finally:
            cluster.stop()


def test_queue_setup_creates_the_consumer(nats_server: Any, tmp_path: Path) -> None:
    purge_stream(nats_server.url)
    env = os.environ | {"NATS_URL": nats_server.url}
    done = run_imageimport("queue-setup", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "imageimport-workers" in done.stderr


def test_worker_waits_for_an_unreachable_nats_and_says_so(tmp_path: Path) -> None:
    """Dependencies may come up after the worker: it keeps trying, unready, one clear line
    per attempt (no traceback), and still stops cleanly on SIGTERM meanwhile."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_BUCKET")} | {
        "NATS_URL": "nats://imageimport:nats-secret-4417@127.0.0.1:1",  # nothing listens
        "NATS_CONNECT_TIMEOUT_SECONDS": "1",
        "HEALTH_PORT": str(port),
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "imageimport", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        expected = (
            "WARNING imageimport.services.waiting: waiting for NATS: Cannot connect to NATS at "
            "nats://***@127.0.0.1:1 within 1 seconds (connection refused); check NATS_URL and "
            "that the NATS server is running and reachable from here."
        )
        deadline = time.monotonic() + 20
        while log_path.read_text().count(expected) < 2:
            assert worker.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (health.status_code, health.json()) == (503, {"status": "unhealthy"})
        assert worker.poll() is None  # still waiting, not crashed

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    output = log_path.read_text()
    assert "Traceback" not in output
    assert "nats-secret-4417" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert all(expected in line for line in lines if "NATS" in line), output
