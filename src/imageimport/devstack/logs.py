"""Show the stack's log files as they grow, one prefixed line at a time, like `docker compose up`.

The processes write to files (which survive them, for reading after a failure); this follows
those files rather than piping the processes' output, so a slow terminal never blocks them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, TextIO

POLL_SECONDS = 0.2
_output_lock = threading.Lock()


def emit(stream: TextIO, text: str) -> None:
    """Write whole lines to `stream` without interleaving with the follower's."""
    with _output_lock:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


class LogFollower:
    def __init__(self, sources: Mapping[str, Path], stream: TextIO) -> None:
        self.stream = stream
        self.width = max(map(len, sources), default=0)
        # Only what is written from now on: the files keep earlier runs' logs too.
        self._files = {name: (path, _size(path)) for name, path in sources.items()}
        self._handles: dict[str, BinaryIO] = {}
        self._partial: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._read_all(final=True)
        for handle in self._handles.values():
            handle.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read_all(final=False)

    def _read_all(self, final: bool) -> None:
        for name in self._files:
            chunk = self._read(name)
            if not chunk and not final:
                continue
            lines = (self._partial.pop(name, b"") + chunk).split(b"\n")
            rest = lines.pop()
            if rest and not final:
                self._partial[name] = rest  # an unfinished line waits for its end
            elif rest:
                lines.append(rest)
            if lines:
                prefix = f"{name:<{self.width}} | "
                text = "".join(
                    f"{prefix}{line.decode('utf-8', 'replace').rstrip()}\n" for line in lines
                )
                emit(self.stream, text)

    def _read(self, name: str) -> bytes:
        handle = self._handles.get(name)
        if handle is None:
            path, offset = self._files[name]
            try:
                handle = path.open("rb")
            except OSError:
                return b""
            handle.seek(offset)
            self._handles[name] = handle
        return handle.read()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
