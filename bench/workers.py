"""`imageimport worker` processes for the benchmark: started, waited for, measured, stopped."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import procstat
from bench.stack import free_port

READY_TIMEOUT = 120.0


def imageimport(*args: str) -> list[str]:
    return [sys.executable, "-m", "imageimport", *args]


def tool(name: str) -> str:
    """A console script installed next to this Python (pyenv shims would hide the real pid)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: pip install {name}")
    return found


class Workers:
    def __init__(
        self,
        env: dict[str, str],
        count: int,
        concurrency: int,
        log_dir: Path,
        profile_dir: Path | None = None,
        profile_gil: bool = False,
    ) -> None:
        self.env = env
        self.count = count
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.profile_dir = profile_dir
        self.profile_gil = profile_gil
        self.processes: list[subprocess.Popen[bytes]] = []
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.cpu_at_start: dict[int, float] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            port = free_port()
            log = (self.log_dir / f"worker-{index}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    imageimport("worker", "--concurrency", str(self.concurrency)),
                    env=self.env | {"HEALTH_PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            log.close()
            self.ports.append(port)
        for process, port in zip(self.processes, self.ports, strict=True):
            self._wait_ready(process, port)
        # Start-up (imports, connections) is not part of the work measured.
        self.cpu_at_start = {p.pid: procstat.cpu_seconds(p.pid) for p in self.processes}
        if self.profile_dir is not None:
            self._profile()

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"a worker was not ready after {READY_TIMEOUT:.0f} s:\n{self.logs()}")

    def _profile(self) -> None:
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        spy = tool("py-spy")
        for index, process in enumerate(self.processes):
            out = self.profile_dir / f"worker-{index}.collapsed.txt"
            # Collapsed stacks (flamegraph.pl / speedscope read them). py-spy leaves out the
            # threads it sees idle, but not those waiting inside C code (libpq, sockets).
            argv = [spy, "record", "--pid", str(process.pid), "--rate", "200", "--format"]
            argv += ["raw", "--output", str(out), "--nonblocking"]
            if self.profile_gil:
                argv.append("--gil")
            self.profilers.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode}:\n{self.logs()}")

    def peak_rss_mb(self) -> list[float]:
        return [procstat.peak_rss_mb(p.pid) for p in self.processes]

    def cpu_seconds(self) -> float:
        """CPU time the workers spent since they were ready."""
        return sum(procstat.cpu_seconds(pid) - start for pid, start in self.cpu_at_start.items())

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for profiler in self.profilers:
            try:
                profiler.wait(60)  # py-spy writes its output once the target has exited
            except subprocess.TimeoutExpired:
                profiler.kill()

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-tail:])
        return "\n".join(parts)
