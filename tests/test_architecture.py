"""The import contracts in pyproject.toml ([tool.importlinter]): the layers, no import circle,
Kubernetes only where it belongs. Checked on this checkout's src/, whatever is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `lint-imports` itself (it exits with 1 when a contract is broken).
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def test_every_import_contract_is_kept() -> None:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout
