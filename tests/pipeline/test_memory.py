"""A 300 MB file passes through download, hashing and storing without being held whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands import run_imageimport
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.pipeline.routes import start_route

BIG = 300 * 1024 * 1024
# Peak RSS of the child it runs, measured by a tiny parent process.
MEASURE = (
    "import resource, subprocess, sys;"
    "code = subprocess.run(sys.argv[1:]).returncode;"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024);"
    "sys.exit(code)"
)


def _import_peak_mb(url: str, env: dict[str, str], cwd: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "imageimport", "import", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(600)
def test_memory_stays_flat_for_a_300_mb_file(tmp_path: Path) -> None:
    # A real PNG followed by 300 MB of trailing data: decoders stop at IEND, so the file is
    # a valid image whose bytes must still be downloaded, hashed and stored in full.
    small = FakeFolder("small", [FakeFile("small.png", make_image(64, 64, "PNG", seed=1))])
    big = FakeFolder("big", [FakeFile("big.png", make_image(64, 64, "PNG", seed=2), size=BIG)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "S3_", "NATS_"))}
    peaks = {}
    for folder in (small, big):
        with start_route("gdrive-api", folder) as route:
            work = tmp_path / folder.name
            work.mkdir()
            peaks[folder.name] = _import_peak_mb(route.url, env | route.env, work)
    stored = list((tmp_path / "big" / "data" / "objects" / "images").rglob("*.png"))
    assert [p.stat().st_size for p in stored] == [BIG]
    assert peaks["big"] - peaks["small"] < 60, peaks
    listed = run_imageimport("images", "--json", env=env, cwd=tmp_path / "big")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["size"] == BIG
