"""Run the benchmark: `python -m bench.run [--smoke] [--only e2e,rclone,...]`.

Parts: e2e (the distributed import), reimport (e2e's folder imported again, unchanged),
lean (e2e's import in lean mode: no decode, no thumbnail, into a database and bucket of its
own), bigfile (one large file through a worker), rclone and put (the baselines on the same files
and S3), growth (e2e's import of small images at 1,000, 10,000 and 100,000 images: the cost
per image as imports grow), listing (a 100,000-file folder), embedded (SQLite + local folder
in one process), api (GET /api/v1/images at 1,000,000 rows), imaging (the worker's Pillow
code against libvips on the same images), s3clients (the worker's boto3 PUT against obstore
and minio on the same files and S3)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import procstat
from bench.dataset import big_file, dataset
from bench.report import ratios, table, targets

if TYPE_CHECKING:
    from bench.stack import Stack

PARTS = (
    "e2e",
    "reimport",
    "lean",
    "bigfile",
    "rclone",
    "put",
    "growth",
    "listing",
    "embedded",
    "api",
    "imaging",
    "s3clients",
)
# Every other part starts the servers (PostgreSQL, NATS, SeaweedFS) first.
_NEEDS_SERVERS = set(PARTS) - {"listing", "embedded", "imaging"}
SMOKE = {
    "images": 200,
    "listing_files": 3000,
    "embedded_images": 100,
    "api_rows": 20_000,
    "api_requests": 30,
    "big_file_mb": 20,
    "growth_sizes": "20,60",
    "growth_preload_rows": 2000,
    "imaging_images": 30,
    "s3clients_files": 100,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--images", type=int, default=10_000, help="images to import (10,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--concurrency", type=int, default=8, help="files per worker (8)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request (20)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--seed", type=int, default=0, help="of the generated images (0)")
    parser.add_argument("--listing-files", type=int, default=100_000)
    parser.add_argument("--embedded-images", type=int, default=1000)
    parser.add_argument("--api-rows", type=int, default=1_000_000)
    parser.add_argument("--api-requests", type=int, default=300, help="per page measured")
    parser.add_argument("--big-file-mb", type=int, default=300)
    parser.add_argument(
        "--imaging-images", type=int, default=300, help="compared by the imaging part (300)"
    )
    parser.add_argument(
        "--s3clients-files", type=int, default=2000, help="PUT by each client in s3clients (2000)"
    )
    parser.add_argument(
        "--growth-sizes",
        default="1000,10000,100000",
        help="comma-separated import sizes of the growth part (1000,10000,100000)",
    )
    parser.add_argument(
        "--growth-preload-rows",
        type=int,
        default=0,
        help="image rows already in the database at each growth size (0; e.g. 1000000)",
    )
    parser.add_argument(
        "--no-pg-fsync",
        dest="pg_fsync",
        action="store_false",
        help="run PostgreSQL without fsync (default: durable, as in production)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the workers into this directory, a folder per part"
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only threads that hold the GIL: the CPU of Python code, without the "
        "waits py-spy cannot tell from work (and without native code that lets the GIL go)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' temp directory")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if "reimport" in args.parts and "e2e" not in args.parts:
        parser.error("reimport imports the folder of e2e again: add e2e to --only")
    try:
        args.growth_sizes = sorted({int(n) for n in str(args.growth_sizes).split(",") if n})
    except ValueError:
        parser.error(f"--growth-sizes takes whole numbers separated by commas: {args.growth_sizes}")
    if "growth" in args.parts and (len(args.growth_sizes) < 2 or min(args.growth_sizes) < 1):
        parser.error("--growth-sizes needs at least two sizes of 1 image or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "config": {
            "images": args.images,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "seed": args.seed,
            "parts": args.parts,
            "smoke": args.smoke,
            "pg_fsync": args.pg_fsync,
            "growth_sizes": args.growth_sizes,
            "growth_preload_rows": args.growth_preload_rows,
        },
        "machine": procstat.machine(),
        "load_average_at_start": procstat.load_average(),
    }
    results: dict[str, Any] = {}
    report["results"] = results
    latency = args.latency_ms / 1000
    total = args.workers * args.concurrency
    root = Path(tempfile.mkdtemp(prefix="imageimport-bench-"))
    stack = None
    try:
        images = []
        if {"e2e", "lean", "rclone", "put", "embedded", "imaging", "s3clients"} & set(args.parts):
            _say(f"images: {args.images:,} (cached under bench/.cache)")
            images = dataset(
                max(args.images, args.embedded_images, args.imaging_images, args.s3clients_files),
                args.seed,
            )
        if _NEEDS_SERVERS & set(args.parts):
            from bench.stack import start_stack

            stack = start_stack(root / "servers", pg_fsync=args.pg_fsync)
            report["versions"] = stack.versions()
        if "e2e" in args.parts:
            _say("e2e: distributed import")
            results.update(_run_e2e(args, stack, images[: args.images], root, latency))
        if "lean" in args.parts:
            _say("lean: distributed import in lean mode")
            results["lean"] = _run_lean(args, stack, images[: args.images], root, latency)
        if "bigfile" in args.parts:
            big = big_file(args.big_file_mb, args.seed)
            _say(f"bigfile: one {big.size / 1e6:,.0f} MB file through one worker")
            results["bigfile"] = _run_bigfile(args, stack, big, root, latency)
        if "rclone" in args.parts:
            from bench.baselines import run_rclone

            _say("rclone: copy from a plain HTTP server")
            results["rclone"] = run_rclone(
                _started(stack), images[: args.images], latency, total, root / "rclone"
            )
        if "put" in args.parts:
            from bench.baselines import run_put

            _say("put: bare boto3 PUT loop from disk")
            results["put"] = run_put(_started(stack), images[: args.images], total)
        if "growth" in args.parts:
            from bench.growth import run_growth

            largest = max(args.growth_sizes)
            _say(f"growth: {args.growth_sizes} small images (cached under bench/.cache)")
            results["growth"] = run_growth(
                _started(stack),
                dataset(largest, args.seed, "small"),
                args.growth_sizes,
                args.workers,
                args.concurrency,
                latency,
                args.growth_preload_rows,
                root / "growth",
                args.profile / "growth" if args.profile else None,
                args.profile_gil,
            )
        if "listing" in args.parts:
            from bench.listing import run_listing

            _say(f"listing: {args.listing_files:,} files")
            results["listing"] = run_listing(args.listing_files, latency, root / "listing")
        if "embedded" in args.parts:
            from bench.embedded import run_embedded

            _say(f"embedded: {args.embedded_images:,} images")
            results["embedded"] = run_embedded(
                images[: args.embedded_images], latency, args.concurrency, root / "embedded"
            )
        if "api" in args.parts:
            from bench.api import run_api

            _say(f"api: {args.api_rows:,} rows")
            results["api"] = run_api(
                _started(stack), args.api_rows, args.api_requests, root / "api"
            )
        if "imaging" in args.parts:
            from bench.imaging import run_imaging

            _say(f"imaging: Pillow against libvips, {args.imaging_images:,} images")
            results["imaging"] = run_imaging(images, args.imaging_images)
        if "s3clients" in args.parts:
            from bench.s3clients import run_s3clients

            _say(f"s3clients: boto3 against obstore and minio, {args.s3clients_files:,} PUTs each")
            results["s3clients"] = run_s3clients(
                _started(stack), images[: args.s3clients_files], total
            )
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            _say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["ratios"] = ratios(results)
    report["targets"] = targets(results, report["ratios"])
    report["load_average_at_end"] = procstat.load_average()
    report["total_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(
        f"total {report['total_s']} s; load average at start "
        f"{_loads(report['load_average_at_start'])}, at end "
        f"{_loads(report['load_average_at_end'])}; JSON in {args.out}"
    )
    return 0


def _run_e2e(
    args: argparse.Namespace, stack: Any, images: list, root: Path, latency: float
) -> dict[str, Any]:
    """The "e2e" result, and the "reimport" one when asked for."""
    from bench.e2e import run_import, run_reimport
    from bench.sources import disk_folder, start_drive

    folder = disk_folder("bench", images)
    drive = start_drive([folder], latency)
    config = _e2e_config(args, len(images))
    try:
        url = stack.database("bench_e2e")
        first = run_import(stack, drive, folder, images, config, root / "e2e", url, "bench-ours")
        if "reimport" not in args.parts:
            return {"e2e": first}
        if args.profile:
            config = replace(config, profile_dir=args.profile / "reimport")
        again = run_reimport(
            stack, drive, folder, config, root / "reimport", url, "bench-ours", first
        )
        return {"e2e": first, "reimport": again}
    finally:
        drive.stop()


def _run_lean(
    args: argparse.Namespace, stack: Any, images: list, root: Path, latency: float
) -> dict[str, Any]:
    from bench.e2e import run_import
    from bench.sources import disk_folder, start_drive

    folder = disk_folder("bench-lean", images)
    drive = start_drive([folder], latency)
    try:
        url = stack.database("bench_lean")
        config = _e2e_config(args, len(images), mode="lean")
        return run_import(stack, drive, folder, images, config, root / "lean", url, "bench-lean")
    finally:
        drive.stop()


def _started(stack: Stack | None) -> Stack:
    """The servers, which every part in _NEEDS_SERVERS has started."""
    if stack is None:
        raise RuntimeError("the servers were not started for this part")
    return stack


def _e2e_config(args: argparse.Namespace, count: int, mode: str = "full") -> Any:
    from bench.e2e import E2EConfig

    return E2EConfig(
        workers=args.workers,
        concurrency=args.concurrency,
        rss_sample_at=1000 if count >= 2000 else max(1, count // 5),
        timeout_s=max(300.0, count / 5),
        profile_dir=args.profile / ("e2e" if mode == "full" else mode) if args.profile else None,
        profile_gil=args.profile_gil,
        mode=mode,
    )


def _run_bigfile(args: argparse.Namespace, stack: Any, big: Any, root: Path, latency: float) -> Any:
    from bench.e2e import E2EConfig, run_import
    from bench.sources import disk_folder, start_drive

    folder = disk_folder("bigfile", [big])
    drive = start_drive([folder], latency)
    config = E2EConfig(workers=1, concurrency=args.concurrency, rss_sample_at=1, timeout_s=600)
    try:
        url = stack.database("bench_bigfile")
        result = run_import(stack, drive, folder, [big], config, root / "bigfile", url, "bench-big")
    finally:
        drive.stop()
    return result | {"file_mb": round(big.size / 1e6), "width": big.width, "height": big.height}


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _loads(loads: Any) -> str:
    return " ".join(f"{v:.2f}" for v in loads)


if __name__ == "__main__":
    sys.exit(main())
