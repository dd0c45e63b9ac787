"""The type checker and the linter over this checkout, as configured in pyproject.toml
([tool.mypy], [tool.ruff]): zero findings, or the run says which."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mypy_finds_nothing_in_src_and_bench() -> None:
    done = _run("mypy", "--config-file", str(ROOT / "pyproject.toml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_finds_nothing() -> None:
    checked = _run("ruff", "check", "src", "tests", "bench")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = _run("ruff", "format", "--check", "src", "tests", "bench")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
