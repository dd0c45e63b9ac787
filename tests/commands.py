"""`imageimport` run as its own process, the way a user runs it from a shell."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int  # the process's VmHWM: the most resident memory it ever had


def run_measured(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> Measured:
    """Run `imageimport` to the end and report its peak resident memory.

    The peak comes from the kernel (`wait4`'s ru_maxrss, the child's VmHWM at exit), so a
    spike between two samples cannot be missed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageimport", *args], stdout=out, stderr=err, env=env, cwd=cwd
        )
        try:
            status, usage = _wait4(process.pid, timeout)
        except TimeoutError:
            process.kill()
            os.waitpid(process.pid, 0)
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            process.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            usage.ru_maxrss * 1024,  # kilobytes on Linux
        )


def _wait4(pid: int, timeout: float) -> tuple[int, resource.struct_rusage]:
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            return status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"imageimport did not finish within {timeout} s")
        time.sleep(0.05)
