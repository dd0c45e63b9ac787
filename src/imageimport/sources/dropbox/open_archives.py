"""How many downloaded archives one process keeps open at once (ZIP_MAX_OPEN_ARCHIVES).

An open archive holds its index in memory (pipeline.memory counts it) and its file on disk (up
to ZIP_MAX_TOTAL_BYTES). A source keeps its archive until its import finishes in this process,
which for a worker may be never (another worker settled the import's last file), and a
worker may take files of any number of ZIP imports. So each open archive takes one of
ZIP_MAX_OPEN_ARCHIVES places. Past them, an archive nobody has read for IDLE_SECONDS is
closed to make room (its import downloads it again should it need it here), and otherwise
the next one waits: an archive in use keeps its place, so two imports going on at once never
make each other download their archives again and again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Unread this long, an archive gives its place to another. Longer than the gaps between the
# files of an import being worked on here, short against how long an import takes.
IDLE_SECONDS = 30.0
# How often a wait looks again: for archives that have become idle meanwhile, and whether
# the waiter must give up (see `lease`).
_LOOK_SECONDS = 0.5


class Lease:
    """One archive's place among the open ones, and how many are using the archive."""

    def __init__(self, places: OpenArchives, discard: Callable[[], None]) -> None:
        self._places = places
        self._discard = discard
        self.users = 1
        self.last_used = time.monotonic()
        self.held = True

    def enter(self) -> bool:
        """Count one more user of the archive; False when it was closed meanwhile (its place
        went to another archive, or `close` was called)."""
        with self._places._changed:
            if not self.held:
                return False
            self.users += 1
            return True

    def leave(self) -> None:
        with self._places._changed:
            self.users -= 1
            self.last_used = time.monotonic()
            self._places._changed.notify_all()

    def close(self) -> None:
        """Give the place back and discard the archive (at once, even while in use: whoever
        reads from it has a file handle of their own). Discarded before the place is given
        back, so the next archive never finds this one still on disk."""
        with self._places._changed:
            if not self.held:
                return
            self.held = False
            self._discard()
            self._places._held.remove(self)
            self._places._changed.notify_all()


class OpenArchives:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: list[Lease] = []
        self._changed = threading.Condition()

    def lease(self, discard: Callable[[], None], stop: Callable[[], None]) -> Lease:
        """A place for one more archive, already counted as used once by the caller: a free
        one, or that of the archive unread for longest (at least IDLE_SECONDS), which
        `discard`s of its own are called to close; else the first of those once there is
        one. While waiting, `stop` is called every half second and may raise to give up.
        `discard` is what closing this archive takes."""
        lease = Lease(self, discard)
        waited = False
        while True:
            with self._changed:
                victim = None
                if len(self._held) >= self.limit:
                    victim = self._idlest()
                    if victim is None:
                        if not waited:
                            log.info(
                                "waiting for one of the %d open archives to be unread for %g s "
                                "(ZIP_MAX_OPEN_ARCHIVES)",
                                self.limit,
                                IDLE_SECONDS,
                            )
                            waited = True
                        self._changed.wait(_LOOK_SECONDS)
                    else:
                        victim.held = False
                        self._held.remove(victim)
                if victim is not None or len(self._held) < self.limit:
                    self._held.append(lease)
                    lease.last_used = time.monotonic()
                    break
            stop()
        if victim is not None:
            log.info(
                "closing an archive unread for %.0f s to make room for another "
                "(ZIP_MAX_OPEN_ARCHIVES=%d)",
                time.monotonic() - victim.last_used,
                self.limit,
            )
            victim._discard()
        return lease

    def _idlest(self) -> Lease | None:
        now = time.monotonic()
        idle = [lease for lease in self._held if not lease.users]
        idle = [lease for lease in idle if now - lease.last_used >= IDLE_SECONDS]
        return min(idle, key=lambda lease: lease.last_used, default=None)

    def held(self) -> int:
        with self._changed:
            return len(self._held)


_shared: dict[int, OpenArchives] = {}
_shared_lock = threading.Lock()


def shared_places(limit: int) -> OpenArchives:
    """The places all sources of this process share (ZIP_MAX_OPEN_ARCHIVES is one setting
    per process, so in practice there is one set)."""
    with _shared_lock:
        places = _shared.get(limit)
        if places is None:
            places = _shared[limit] = OpenArchives(limit)
        return places
