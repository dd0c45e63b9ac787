"""The venv that runs real Helm for the chart tests.

helm-sdkpy (Helm 4 as a library) needs Python >= 3.12 while the project and its tests run on
3.11, so the chart is rendered by tests/k8s/render_chart.py in a venv of its own. The venv is
built on first use from chart-requirements.txt with pip, and reused afterwards: it lives under
~/.cache/imageimport-chart-venv/<hash of the requirements and the interpreter>, so changing
either builds a new one. A lock keeps two test runs from building the same venv at once.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
REQUIREMENTS = HERE / "chart-requirements.txt"
CACHE_ROOT = Path(
    os.environ.get("IMAGEIMPORT_CHART_VENV_CACHE", "~/.cache/imageimport-chart-venv")
).expanduser()
MIN_VERSION = (3, 12)
# Where to look for an interpreter when IMAGEIMPORT_CHART_PYTHON does not name one.
CANDIDATES = (
    "python3.13",
    "python3.12",
    "~/.pyenv/versions/3.1[2-9]*/bin/python3",
    "/root/.pyenv/versions/3.1[2-9]*/bin/python3",
    "/usr/bin/python3",
)


class ChartVenvError(RuntimeError):
    """The venv could not be built (pip failed): a failure, not a reason to skip."""


@dataclass(frozen=True)
class ChartVenv:
    python: Path
    built: bool  # False when an existing venv was reused
    seconds: float


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (int(out[0]), int(out[1])) if len(out) == 2 else None


def find_python() -> str | None:
    """An interpreter new enough for helm-sdkpy, or None."""
    explicit = os.environ.get("IMAGEIMPORT_CHART_PYTHON")
    if explicit:
        return explicit if (_version_of(explicit) or (0, 0)) >= MIN_VERSION else None
    if sys.version_info[:2] >= MIN_VERSION:
        return sys.executable
    for candidate in CANDIDATES:
        pattern = os.path.expanduser(candidate)
        paths = sorted(glob.glob(pattern), reverse=True) if "*" in pattern else [pattern]
        for path in paths:
            found = shutil.which(path)
            if found and (_version_of(found) or (0, 0)) >= MIN_VERSION:
                return found
    return None


def _key(python: str) -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(os.path.realpath(python).encode())
    digest.update(".".join(map(str, _version_of(python) or ())).encode())
    return digest.hexdigest()[:16]


def ensure_venv(python: str) -> ChartVenv:
    started = time.monotonic()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    venv = CACHE_ROOT / _key(python)
    venv_python = venv / "bin" / "python"
    ready = venv / ".ready"
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and venv_python.exists():
            return ChartVenv(venv_python, built=False, seconds=time.monotonic() - started)
        shutil.rmtree(venv, ignore_errors=True)  # a build that was interrupted
        for command in (
            [python, "-m", "venv", str(venv)],
            [str(venv_python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        ):
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise ChartVenvError(
                    f"Building the chart-test venv failed: {' '.join(command)}\n"
                    f"{result.stdout}\n{result.stderr}"
                )
        ready.write_text(REQUIREMENTS.read_text())
    return ChartVenv(venv_python, built=True, seconds=time.monotonic() - started)
