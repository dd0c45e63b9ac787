"""Memory and CPU of processes and of the machine, read from /proc (Linux)."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU time the process used so far (and, with_children, that of its
    children it has waited for)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may contain spaces: split after its closing paren.
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


@dataclass(frozen=True)
class MachineCpu:
    busy: float  # seconds of CPU time spent on anything but idle and I/O wait, all cores
    total: float

    @staticmethod
    def now() -> MachineCpu:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        return MachineCpu((total - idle) / _TICKS, total / _TICKS)

    def since(self, earlier: MachineCpu) -> float:
        return self.busy - earlier.busy


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(total_kb / 1024**2, 1)}


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and all its living descendants (PostgreSQL's backends are
    children of the postmaster), plus what its exited children left in it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += cpu_seconds(pid, with_children=True)
        except OSError:
            continue  # exited meanwhile
        todo.extend(children.get(pid, ()))
    return total


def own_cpu_seconds() -> float:
    """This process alone (not its children): here, the fake source servers' threads."""
    return cpu_seconds(os.getpid())


def children_cpu_seconds() -> float:
    """Children of this process that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}
