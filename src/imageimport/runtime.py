"""What every service holds for its lifetime: settings, database, object store, and the
sources of the imports it is working on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from imageimport.db.engine import make_engine, make_session_factory
from imageimport.db.migrate import upgrade
from imageimport.db.models import Import
from imageimport.housekeeping import Housekeeper
from imageimport.settings import Settings
from imageimport.sources.base import Source
from imageimport.sources.registry import open_source
from imageimport.storage import make_store
from imageimport.storage.base import ObjectStore


class Runtime:
    def __init__(self, settings: Settings, migrate: bool = True, housekeeping: bool = True) -> None:
        """`housekeeping`: remove what crashed processes left (at once, then periodically
        until `close()`); off only for a short look at the database."""
        self.settings = settings
        self.engine = make_engine(settings)
        if migrate:
            upgrade(self.engine)
        self.sessions = make_session_factory(self.engine)
        self.store: ObjectStore = make_store(settings)
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()
        self._housekeeper = Housekeeper(settings, self.store) if housekeeping else None
        if self._housekeeper is not None:
            self._housekeeper.start()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    def source_for(self, record: Import) -> Source:
        """One open source per import, shared by every thread of this process."""
        with self._lock:
            source = self._sources.get(record.id)
            if source is None:
                # The stored canonical URL carries everything the provider needs
                # (e.g. a Drive resource key).
                source = open_source(record.url, self.settings)
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
