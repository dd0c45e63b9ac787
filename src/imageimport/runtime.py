"""What every service holds for its lifetime: settings, database, object store, and the
sources of the imports it is working on."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from imageimport import db
from imageimport.db.models import Import
from imageimport.housekeeping import Housekeeper
from imageimport.settings import Settings
from imageimport.sources.base import Source
from imageimport.sources.budget import SlotBook, process_slot_book
from imageimport.sources.registry import open_source
from imageimport.storage import make_store
from imageimport.storage.base import ObjectStore


class Runtime:
    def __init__(self, settings: Settings, migrate: bool = True, housekeeping: bool = True) -> None:
        """`housekeeping`: remove what crashed processes left (at once, then periodically
        until `close()`); off only for a short look at the database."""
        self.settings = settings
        self.engine = db.make_engine(settings)
        if migrate:
            db.upgrade(self.engine)
        self.sessions = db.make_session_factory(self.engine)
        # The sources' request budgets: shared by every process on PostgreSQL; the embedded
        # default (SQLite) runs one process, which keeps them in memory.
        self.slots: SlotBook = (
            db.DatabaseSlotBook(self.engine)
            if db.database_backend(settings.effective_database_url) == "postgresql"
            else process_slot_book()
        )
        self.store: ObjectStore = make_store(settings)
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()
        self._housekeeper = Housekeeper(settings, self.store) if housekeeping else None
        if self._housekeeper is not None:
            self._housekeeper.start()

    def session(self) -> AbstractContextManager[db.Session]:
        """A session committed on success and rolled back on error."""
        return db.transaction(self.sessions)

    def source_for(self, record: Import) -> Source:
        """One open source per import, shared by every thread of this process."""
        with self._lock:
            source = self._sources.get(record.id)
            if source is None:
                # The stored canonical URL carries everything the provider needs
                # (e.g. a Drive resource key).
                source = open_source(record.url, self.settings, self.slots)
                self._sources[record.id] = source
            return source

    def forget_source(self, import_id: str) -> None:
        with self._lock:
            source = self._sources.pop(import_id, None)
        if source is not None:
            source.close()

    def close(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.stop()
        with self._lock:
            sources, self._sources = list(self._sources.values()), {}
        for source in sources:
            source.close()
        self.engine.dispose()
