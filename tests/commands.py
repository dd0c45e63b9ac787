"""`imageimport` run as its own process, the way a user runs it from a shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_imageimport(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run to the end; the caller checks the exit code and reads stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "imageimport", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
