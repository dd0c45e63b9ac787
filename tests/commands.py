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


# Started from a small process of its own: a process inherits the peak of the one that
# started it (ru_maxrss survives fork and exec, and with vfork it is the starter's lifetime
# peak), so started from the tests it would report the test process's memory, not its own.
_LAUNCHER = """
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
    spike between two samples cannot be missed. It is never below the launcher's ~15 MB."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        report = Path(scratch) / "usage"
        command = [sys.executable, "-m", "imageimport", *args]
        launcher = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(report), *command],
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's own session
            launcher.wait()
            raise TimeoutError(f"imageimport did not finish within {timeout} s") from None
        returncode, maxrss = (int(part) for part in report.read_text().split())
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            maxrss * 1024,  # kilobytes on Linux
        )
