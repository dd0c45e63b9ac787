"""Listing a large folder through the Drive API source (pages of 1,000, as Drive allows)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.sources import folder_url, listed_folder, start_drive
from bench.stats import rounded
from imageimport.settings import Settings
from imageimport.sources.registry import open_source


def run_listing(count: int, latency_s: float, work_dir: Path) -> dict[str, Any]:
    folder = listed_folder(count)
    drive = start_drive([folder], latency_s)
    try:
        settings = Settings(_env_file=None, data_dir=work_dir, **drive.settings())  # type: ignore[call-arg]
        source = open_source(folder_url(folder), settings)
        try:
            started = time.monotonic()
            listed = sum(1 for _ in source.list())
            elapsed = time.monotonic() - started
        finally:
            source.close()
    finally:
        drive.stop()
    if listed != count:
        raise RuntimeError(f"listed {listed} of {count} files")
    return {
        "files": listed,
        "requests": drive.times.requests,
        "seconds": rounded(elapsed),
        "files_per_s": rounded(listed / elapsed),
    }
