"""`imageimport` run as its own process, the way a user runs it from a shell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
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


# Runs the command in a fresh interpreter and writes its exit code and peak to argv[1]. A child
# of the test process itself cannot be measured by wait4: Linux starts a vfork()ed child's
# high-water mark at its parent's at exec, so a test that once held 700 MB would see every
# child "peak" at 700 MB. The command's own process starts from this small one instead.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_measured(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> Measured:
    """Run `imageimport` to the end and report its peak resident memory.

    The peak comes from the kernel (`wait4`'s ru_maxrss, the child's VmHWM at exit), so a
    spike between two samples cannot be missed."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        result = Path(scratch) / "result"
        command = [sys.executable, "-m", "imageimport", *args]
        process = subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(result), *command],
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,  # a timeout ends the command with its wrapper
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"imageimport did not finish within {timeout} s") from None
        returncode, peak_kb = map(int, result.read_text().split())
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            peak_kb * 1024,  # kilobytes on Linux
        )
