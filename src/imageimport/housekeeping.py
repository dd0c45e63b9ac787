"""Removing what processes that died mid-write left behind: partial objects, Dropbox ZIP
downloads and S3 multipart uploads. Every process that opens the store sweeps at start-up,
then every SWEEP_SECONDS while it runs."""

from __future__ import annotations

import logging
import threading

from imageimport.settings import Settings
from imageimport.storage.base import ObjectStore
from imageimport.tempfiles import DROPBOX_ZIPS, TempFiles

log = logging.getLogger(__name__)

SWEEP_SECONDS = 300.0
# A process that stops waits this long for a sweep in progress (e.g. an S3 request).
STOP_SECONDS = 10.0


class Housekeeper:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.max_age = settings.temp_max_age_seconds
        self.store = store
        self.temp_files: list[TempFiles] = [DROPBOX_ZIPS]
        if store.temp_files is not None:
            self.temp_files.append(store.temp_files)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        """Sweep the local temporary files now (a directory listing each); the store itself,
        which may mean a walk of it or a request to S3, in the background."""
        self._sweep_temp_files()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_SECONDS)

    def _run(self) -> None:
        while True:
            try:
                removed = self.store.remove_leftovers(self.max_age)
            except Exception as error:
                log.warning("cleaning up the object store failed: %s", _first_line(error))
            else:
                if removed:
                    log.info("removed %d leftovers of interrupted writes from the store", removed)
            if self._stop.wait(SWEEP_SECONDS):
                return
            self._sweep_temp_files()

    def _sweep_temp_files(self) -> None:
        for files in self.temp_files:
            try:
                files.sweep(self.max_age)
            except OSError as error:
                log.warning("cleaning up temporary files in %s failed: %s", files.where(), error)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
