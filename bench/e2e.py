"""The distributed import, end to end: a planner process lists the fake Drive folder and
publishes one NATS message per file; W `imageimport worker` processes with C threads each
download, hash, inspect, thumbnail, upload to SeaweedFS and record in PostgreSQL (in lean
mode: download, hash, read the headers, upload the original, record). Then the same folder
imported again, unchanged: only listing requests should reach the source."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from tests.fakes.folder import FakeFolder

from bench import procstat
from bench.dataset import BenchImage
from bench.sources import DriveServer, folder_url
from bench.stack import Stack
from bench.stats import per_file, percentile, rounded
from bench.workers import Workers, imageimport

TERMINAL = ("succeeded", "completed_with_failures", "failed", "cancelled")
POLL_SECONDS = 0.1


@dataclass
class E2EConfig:
    workers: int
    concurrency: int
    rss_sample_at: int  # settled files at which the workers' peak RSS is read mid-run
    timeout_s: float
    profile_dir: Path | None = None
    profile_gil: bool = False  # see bench.run --profile-gil
    mode: str = "full"  # the import's --mode


def _workers(env: dict[str, str], config: E2EConfig, work_dir: Path) -> Workers:
    """The worker processes `config` asks for, logging into `work_dir`."""
    return Workers(
        env,
        config.workers,
        config.concurrency,
        work_dir,
        config.profile_dir,
        config.profile_gil,
    )


def run_import(
    stack: Stack,
    drive: DriveServer,
    folder: FakeFolder,
    images: list[BenchImage],
    config: E2EConfig,
    work_dir: Path,
    database_url: str,
    bucket: str,
) -> dict[str, Any]:
    env = stack.env(database_url, bucket, work_dir / "data") | drive.env()
    workers = _workers(env, config, work_dir)
    engine = create_engine(database_url)
    try:
        workers.start()
        cpu_before = procstat.MachineCpu.now()
        used_before = stack.cpu_seconds()
        started = time.time()
        with (work_dir / "planner.log").open("wb") as log:
            planner = subprocess.Popen(
                imageimport("import", folder_url(folder), "--detach", "--mode", config.mode),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        import_id, rss_early = _wait(engine, workers, planner, config, started)
        # Read before the workers stop: /proc goes with them.
        peak_rss = workers.peak_rss_mb()
        worker_cpu = workers.cpu_seconds()
        machine_cpu = procstat.MachineCpu.now().since(cpu_before)
        if planner.wait(60) != 0:
            raise RuntimeError(f"the planner failed:\n{(work_dir / 'planner.log').read_text()}")
        # The workers are not waited for yet: "exited" is the planner alone.
        used = procstat.spent(used_before, stack.cpu_seconds())
    finally:
        workers.stop()
    result = _from_database(engine, import_id, drive, started)
    engine.dispose()
    done = result["images_stored"]
    if done != len(images):
        raise RuntimeError(f"{done} of {len(images)} images stored: {result['states']}")
    wall = result["wall_s"]
    total_bytes = sum(m.size for m in images)
    return {
        **result,
        "mode": config.mode,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "images_per_s": rounded(done / wall),
        "mb_per_s": rounded(total_bytes / 1e6 / wall),
        "peak_rss_mb_per_worker": [rounded(v) for v in peak_rss],
        "peak_rss_mb_max": rounded(max(peak_rss)),
        "peak_rss_mb_at_sample": rounded(max(rss_early)) if rss_early else None,
        "rss_sample_at_images": config.rss_sample_at,
        "worker_cpu_s_per_image": rounded(worker_cpu / done),
        "cpu_s_per_image": per_file(used | {"workers": worker_cpu}, done, planner="exited"),
        "machine_cpu_s_per_image": rounded(machine_cpu / done),
    }


def run_reimport(
    stack: Stack,
    drive: DriveServer,
    folder: FakeFolder,
    config: E2EConfig,
    work_dir: Path,
    database_url: str,
    bucket: str,
    first: dict[str, Any],
) -> dict[str, Any]:
    """The folder `first` imported, imported again into the same database and bucket, with
    nothing changed at the source: every file should be settled unchanged, not downloaded."""
    env = stack.env(database_url, bucket, work_dir / "data") | drive.env()
    workers = _workers(env, config, work_dir)
    engine = create_engine(database_url)
    requests, downloads = drive.times.requests, drive.times.downloads
    try:
        workers.start()
        started = time.time()
        with (work_dir / "planner.log").open("wb") as log:
            planner = subprocess.run(
                imageimport("import", folder_url(folder), "--detach"),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=config.timeout_s,
                check=False,
            )
        if planner.returncode != 0:
            raise RuntimeError(f"the planner failed:\n{(work_dir / 'planner.log').read_text()}")
        import_id = _wait_for_new_import(engine, started, started + config.timeout_s)
    finally:
        workers.stop()
    result = _from_database(engine, import_id, drive, started)
    engine.dispose()
    if result["import_state"] != "succeeded":
        raise RuntimeError(f"the re-import ended {result['import_state']}: {result['states']}")
    return {
        "import_state": result["import_state"],
        "states": result["states"],
        "wall_s": result["wall_s"],
        "wall_vs_first": rounded(result["wall_s"] / first["wall_s"]),
        "downloads": drive.times.downloads - downloads,
        "requests": drive.times.requests - requests,
    }


def _wait_for_new_import(engine: Any, since: float, deadline: float) -> str:
    """The import created since `since`, once it is finished."""
    while True:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT id, state FROM imports WHERE created_at >= :since"),
                {"since": datetime.fromtimestamp(since, UTC)},
            ).one()
        if row.state in TERMINAL:
            return str(row.id)
        if time.time() > deadline:
            raise RuntimeError(f"the re-import is still {row.state}")
        time.sleep(POLL_SECONDS)


def _wait(
    engine: Any,
    workers: Workers,
    planner: subprocess.Popen[bytes],
    config: E2EConfig,
    started: float,
) -> tuple[str, list[float]]:
    """Until the import is finished; the workers' peak RSS once `rss_sample_at` files are
    settled (to see whether memory grows with the number of files)."""
    rss_early: list[float] = []
    deadline = started + config.timeout_s
    while True:
        time.sleep(POLL_SECONDS)
        workers.check_alive()
        if planner.poll() not in (None, 0):
            raise RuntimeError(f"the planner exited with {planner.returncode}")
        with engine.connect() as connection:
            # Created since the start: the database may already hold imports (growth part).
            row = connection.execute(
                text(
                    "SELECT id, state FROM imports WHERE created_at >= :since "
                    "ORDER BY created_at DESC LIMIT 1"
                ),
                {"since": datetime.fromtimestamp(started, UTC)},
            ).first()
            if row is None:
                continue
            if not rss_early:
                settled = connection.scalar(
                    text(
                        "SELECT count(*) FROM import_items "
                        "WHERE import_id = :id AND state <> 'pending'"
                    ),
                    {"id": row.id},
                )
                if settled >= config.rss_sample_at:
                    rss_early = workers.peak_rss_mb()
        if row.state in TERMINAL:
            return str(row.id), rss_early
        if time.time() > deadline:
            raise RuntimeError(f"not finished after {config.timeout_s:.0f} s:\n{workers.logs()}")


def _from_database(
    engine: Any, import_id: str, drive: DriveServer, started: float
) -> dict[str, Any]:
    with engine.connect() as connection:
        record = connection.execute(
            text("SELECT state, finished_at FROM imports WHERE id = :id"), {"id": import_id}
        ).one()
        states = {
            state: count
            for state, count in connection.execute(
                text(
                    "SELECT state, count(*) FROM import_items WHERE import_id = :id GROUP BY state"
                ),
                {"id": import_id},
            )
        }
        settled = connection.execute(
            text(
                "SELECT remote_id, updated_at FROM import_items "
                "WHERE import_id = :id AND state = 'done'"
            ),
            {"id": import_id},
        ).all()
    finished: datetime = record.finished_at
    wall = finished.timestamp() - started
    first_stored = min(row.updated_at.timestamp() for row in settled) - started if settled else 0
    # From the moment the worker asked the source for the file to its database commit.
    latencies = [
        row.updated_at.timestamp() - drive.times.first_request[row.remote_id]
        for row in settled
        if row.remote_id in drive.times.first_request
    ]
    return {
        "import_state": record.state,
        "states": states,
        "images_stored": states.get("done", 0),
        "wall_s": rounded(wall),
        "first_image_s": rounded(first_stored),
        "latency_p50_ms": rounded(percentile(latencies, 50) * 1000) if latencies else None,
        "latency_p99_ms": rounded(percentile(latencies, 99) * 1000) if latencies else None,
    }
