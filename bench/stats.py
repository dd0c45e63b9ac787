"""Small numeric helpers."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating between the two nearest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rounded(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if abs(value) < 10**digits else round(value)


def per_file(used: dict[str, float], count: int, **renames: str) -> dict[str, float]:
    """CPU seconds per file by party, and their total ("all"): what a system costs, whatever
    else the machine is doing meanwhile. `renames`: new name=old name."""
    names = {old: new for new, old in renames.items()}
    result = {names.get(name, name): rounded(value / count) for name, value in used.items()}
    result["all"] = rounded(sum(used.values()) / count)
    return result
