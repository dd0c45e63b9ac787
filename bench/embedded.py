"""The embedded default: `imageimport import` alone, with SQLite and a local folder store,
processing the files in its own process."""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.dataset import BenchImage
from bench.sources import disk_folder, folder_url, start_drive
from bench.stack import clean_env
from bench.stats import rounded
from bench.workers import imageimport


def run_embedded(
    images: list[BenchImage], latency_s: float, concurrency: int, work_dir: Path
) -> dict[str, Any]:
    folder = disk_folder("embedded", images)
    drive = start_drive([folder], latency_s)
    data_dir = work_dir / "data"
    env = clean_env() | drive.env() | {"DATA_DIR": str(data_dir)}
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        with (work_dir / "import.log").open("wb") as log:
            process = subprocess.Popen(
                imageimport("import", folder_url(folder), "--concurrency", str(concurrency)),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            status, usage, peak_rss_mb = _wait_with_peak_rss(process.pid)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        drive.stop()
    if process.returncode != 0:
        log_text = (work_dir / "import.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the embedded import failed ({process.returncode}):\n{log_text}")
    with sqlite3.connect(data_dir / "imageimport.db") as db:
        times = db.execute("SELECT started_at, finished_at FROM imports").fetchone()
        done = db.execute("SELECT count(*) FROM import_items WHERE state = 'done'").fetchone()[0]
    if done != len(images):
        raise RuntimeError(f"the embedded import stored {done} of {len(images)} images")
    # The import itself, from the start of listing to its last file (process start-up and
    # migrations excluded).
    seconds = _parse(times[1]) - _parse(times[0])
    return {
        "images": done,
        "concurrency": concurrency,
        "import_s": rounded(seconds),
        "wall_s": rounded(wall),
        "images_per_s": rounded(done / seconds),
        "mb_per_s": rounded(sum(m.size for m in images) / 1e6 / seconds),
        "cpu_s_per_image": rounded((usage.ru_utime + usage.ru_stime) / done),
        "peak_rss_mb": rounded(peak_rss_mb),
    }


def _wait_with_peak_rss(pid: int) -> tuple[int, resource.struct_rusage, float]:
    """Wait for the child: its exit status, its resource usage and its peak RSS in MB.

    The peak is the child's own VmHWM, read while it runs. Its `ru_maxrss` would not do: the
    child starts as a copy of this process (vfork), whose resident memory Linux keeps in the
    child's maximum across exec: `python -c pass` started by a process holding 400 MB reports
    414 MB, and the embedded import after the other parts reported 507 MB (161-164 MB alone)."""
    peak = 0.0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak
        with contextlib.suppress(OSError, LookupError):
            peak = max(peak, procstat.peak_rss_mb(pid))
        time.sleep(0.1)


def _parse(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()
