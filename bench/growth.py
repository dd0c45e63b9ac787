"""Cost growth (issue 12): e2e's distributed import at several sizes (1,000, 10,000 and
100,000 by default) of the same small images, each into a database of its own (a copy of
one already holding `preload_rows` image rows, when asked), so that what an image costs at
one size compares with what it costs at another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.api import fill_images
from bench.dataset import BenchImage
from bench.e2e import E2EConfig, run_import
from bench.sources import disk_folder, start_drive
from bench.stack import Stack
from bench.stats import rounded

_TEMPLATE = "bench_growth_template"
# The figures kept from each size's e2e result.
_KEPT = (
    "images_stored",
    "wall_s",
    "images_per_s",
    "cpu_s_per_image",
    "worker_cpu_s_per_image",
    "machine_cpu_s_per_image",
    "peak_rss_mb_max",
    "latency_p50_ms",
    "latency_p99_ms",
)


def run_growth(
    stack: Stack,
    images: list[BenchImage],
    sizes: list[int],
    workers: int,
    concurrency: int,
    latency: float,
    preload_rows: int,
    work_dir: Path,
    profile_dir: Path | None = None,
    profile_gil: bool = False,
) -> dict[str, Any]:
    template = None
    fill_s = None
    if preload_rows:
        fill_s = fill_images(stack.database(_TEMPLATE), preload_rows)
        template = _TEMPLATE
    runs = []
    for size in sorted(sizes):
        chosen = images[:size]
        # Each size has its own folder id, database and bucket: no image is a duplicate of one
        # stored by an earlier size, so every size does the whole work for every image.
        folder = disk_folder(f"growth-{size}", chosen)
        drive = start_drive([folder], latency)
        config = E2EConfig(
            workers=workers,
            concurrency=concurrency,
            rss_sample_at=min(1000, max(1, size // 5)),
            timeout_s=max(300.0, size / 5),
            profile_dir=profile_dir / str(size) if profile_dir else None,
            profile_gil=profile_gil,
        )
        try:
            url = stack.database(f"bench_growth_{size}", template=template)
            result = run_import(
                stack,
                drive,
                folder,
                chosen,
                config,
                work_dir / f"growth-{size}",
                url,
                f"bench-growth-{size}",
            )
        finally:
            drive.stop()
        runs.append(
            {"images": size, "mean_file_kb": rounded(sum(m.size for m in chosen) / size / 1000)}
            | {key: result[key] for key in _KEPT}
        )
    smallest, largest = runs[0], runs[-1]
    return {
        "sizes": [run["images"] for run in runs],
        "preloaded_rows": preload_rows,
        "preload_fill_s": rounded(fill_s) if fill_s is not None else None,
        "runs": runs,
        # Per-image CPU at the largest size over the smallest: 1.0 is a flat cost.
        "cpu_growth": rounded(
            largest["cpu_s_per_image"]["all"] / smallest["cpu_s_per_image"]["all"]
        ),
        "worker_cpu_growth": rounded(
            largest["worker_cpu_s_per_image"] / smallest["worker_cpu_s_per_image"]
        ),
    }
