"""Summarise py-spy's collapsed stacks (`--profile DIR`): where the workers' CPU went.

python -m bench.profile DIR/e2e [--top 30] [--focus process_item]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy frames look like "function (path/to/file.py:123)"; lines are dropped so that one
# function counts once however many of its lines were sampled.
_LINE = re.compile(r":\d+\)$")


def load(directory: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in sorted(directory.glob("*.collapsed.txt")):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                frames = tuple(_LINE.sub(")", f) for f in stack.split(";"))
                stacks[frames] += int(count)
    return stacks


def summary(stacks: Counter[tuple[str, ...]], top: int, focus: str | None) -> str:
    if focus:
        stacks = Counter({s: n for s, n in stacks.items() if any(focus in f for f in s)})
    total = sum(stacks.values()) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples" + (f" in stacks through {focus!r}" if focus else "")]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--focus", help="only stacks through a frame containing this text")
    args = parser.parse_args()
    print(summary(load(args.directory), args.top, args.focus))


if __name__ == "__main__":
    main()
