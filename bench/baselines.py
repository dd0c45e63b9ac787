"""What a user would otherwise pick, on the same files and the same S3: rclone copying from a
plain HTTP server with the same latency, and a bare boto3 PUT loop reading from local disk
(the most this store takes on this machine, with nothing else to do)."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import procstat
from bench.dataset import BenchImage
from bench.sources import start_plain_http
from bench.stack import ACCESS_KEY, SECRET_KEY, Stack
from bench.stats import per_file, rounded
from bench.workers import tool


def run_rclone(
    stack: Stack, images: list[BenchImage], latency_s: float, transfers: int, work_dir: Path
) -> dict[str, Any]:
    bucket = "bench-rclone"
    client: Any = stack.s3_client()
    client.create_bucket(Bucket=bucket)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "rclone.conf").touch()
    server = start_plain_http(images, latency_s)
    env = os.environ | {
        "RCLONE_CONFIG": str(work_dir / "rclone.conf"),
        "RCLONE_CACHE_DIR": str(work_dir / "cache"),
        "RCLONE_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    argv = [
        tool("rclone"),
        "copy",
        f":http,url='{server.url}/':",
        f":s3,provider=SeaweedFS,endpoint='{stack.s3.endpoint_url}':{bucket}/files",
        # The same total concurrency as the import (checkers HEAD the source files).
        "--transfers",
        str(transfers),
        "--checkers",
        str(transfers),
        "--log-file",
        str(work_dir / "rclone.log"),
    ]
    try:
        cpu_before = procstat.MachineCpu.now()
        used_before = stack.cpu_seconds()
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        machine_cpu = procstat.MachineCpu.now().since(cpu_before)
        process.returncode = os.waitstatus_to_exitcode(status)
        used = procstat.spent(used_before, stack.cpu_seconds())
        # wait4 reaped it, so RUSAGE_CHILDREN does not count it: its own usage does.
        used["exited"] = usage.ru_utime + usage.ru_stime
    finally:
        server.stop()
    if process.returncode != 0:
        log = (work_dir / "rclone.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"rclone failed ({process.returncode}):\n{log}")
    copied = _count(client, bucket)
    if copied != len(images):
        raise RuntimeError(f"rclone copied {copied} of {len(images)} files")
    cpu = per_file(used, len(images), rclone="exited")
    return _rates(images, wall, cpu, machine_cpu) | {
        "transfers": transfers,
        "peak_rss_mb": rounded(usage.ru_maxrss / 1024),
    }


def run_put(stack: Stack, images: list[BenchImage], threads: int) -> dict[str, Any]:
    bucket = "bench-put"
    client: Any = stack.s3_client(pool=threads)
    client.create_bucket(Bucket=bucket)

    def put(image: BenchImage) -> None:
        with open(image.path, "rb") as body:
            client.put_object(
                Bucket=bucket, Key=f"files/{image.name}", Body=body, ContentType=image.mime_type
            )

    cpu_before = procstat.MachineCpu.now()
    used_before = stack.cpu_seconds()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, images):
            pass
    wall = time.monotonic() - started
    used = procstat.spent(used_before, stack.cpu_seconds())
    machine_cpu = procstat.MachineCpu.now().since(cpu_before)
    copied = _count(client, bucket)
    if copied != len(images):
        raise RuntimeError(f"the PUT loop stored {copied} of {len(images)} files")
    cpu = per_file(used, len(images), put_loop="bench")
    return _rates(images, wall, cpu, machine_cpu) | {"threads": threads}


def _rates(
    images: list[BenchImage], wall: float, cpu: dict[str, float], machine_cpu: float
) -> dict[str, Any]:
    count = len(images)
    return {
        "files": count,
        "wall_s": rounded(wall),
        "files_per_s": rounded(count / wall),
        "mb_per_s": rounded(sum(m.size for m in images) / 1e6 / wall),
        "cpu_s_per_file": cpu,
        "machine_cpu_s_per_file": rounded(machine_cpu / count),
    }


def _count(client: Any, bucket: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += len(page.get("Contents", ()))
    return total
