"""The queries every service shares. Functions take a Session and leave committing to
the caller, except where a docstring says otherwise."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, overload

from sqlalchemy import Insert, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from imageimport.db.models import (
    TERMINAL_IMPORT_STATES,
    Image,
    Import,
    ImportItem,
    utcnow,
)

# States an import may move to from each state: it only ever moves forward.
_NEXT_STATES: dict[str, frozenset[str]] = {
    "pending": frozenset({"listing", *TERMINAL_IMPORT_STATES}),
    "listing": frozenset({"importing", *TERMINAL_IMPORT_STATES}),
    "importing": TERMINAL_IMPORT_STATES,
}


class Folder(Protocol):
    """The folder an import reads, such as a `sources.base.FolderRef` (db imports no source)."""

    @property
    def provider(self) -> str: ...
    @property
    def folder_id(self) -> str: ...
    @property
    def url(self) -> str: ...


class ListedFile(Protocol):
    """What `add_items` records of a file a listing found, such as a `sources.base.RemoteFile`."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int | None: ...
    @property
    def mime_type(self) -> str | None: ...
    @property
    def checksum(self) -> str | None: ...
    @property
    def extra(self) -> dict[str, Any]: ...
    @property
    def refused(self) -> str | None: ...


@dataclass(frozen=True)
class Counters:
    discovered: int = 0
    pending: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: int = 0
    bytes: int = 0

    @property
    def finished(self) -> int:
        return self.discovered - self.pending


@dataclass(frozen=True)
class NewImage:
    sha256: str
    object_key: str
    thumbnail_key: str
    size: int
    content_type: str
    width: int
    height: int
    format: str
    taken_at: datetime | None
    camera: str | None
    name: str
    path: str
    provider: str
    source_file_id: str
    import_id: str


# The key of import_items.extra that holds why a listed file was refused.
REFUSED = "refused"

# NUL and unpaired surrogates: PostgreSQL text cannot hold the first, and no UTF-8 database
# can encode the second. Names come from strangers, so either may arrive.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@overload
def storable(text: str, limit: int | None = None) -> str: ...
@overload
def storable(text: None, limit: int | None = None) -> None: ...
def storable(text: str | None, limit: int | None = None) -> str | None:
    """`text` as any database can store it (U+FFFD for what it cannot), cut to `limit`."""
    if text is None:
        return None
    return _UNSTORABLE.sub("\ufffd", text)[:limit]


def _insert(session: Session, table: Table | Any) -> Insert:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def create_import(
    session: Session,
    ref: Folder,
    options: dict[str, Any] | None = None,
    external_id: str | None = None,
) -> Import:
    """A new import, or the existing one for `external_id` (so callers can retry safely)."""
    if external_id is not None:
        existing = session.scalar(select(Import).where(Import.external_id == external_id))
        if existing is not None:
            return existing
    record = Import(
        provider=ref.provider,
        url=ref.url,
        folder_id=ref.folder_id,
        options=options or {},
        external_id=external_id,
    )
    session.add(record)
    session.flush()
    return record


def advance_import(session: Session, import_id: str, state: str, error: str | None = None) -> bool:
    """Move an import forward to `state`; False (and no change) if that would go back."""
    allowed_from = [old for old, new in _NEXT_STATES.items() if state in new]
    values: dict[str, Any] = {"state": state}
    if state == "listing":
        values["started_at"] = utcnow()
    if state in TERMINAL_IMPORT_STATES:
        values["finished_at"] = utcnow()
    if error is not None:
        values["error"] = error
    result = session.execute(
        update(Import)
        .where(Import.id == import_id, Import.state.in_(allowed_from))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_items(session: Session, import_id: str, files: Sequence[ListedFile]) -> list[ImportItem]:
    """Record listed files (idempotent per remote id) and return the ones still pending.
    Refused files (`ListedFile.refused`) are recorded as failed with their reason."""
    if not files:
        return []
    rows = [
        {
            "import_id": import_id,
            "remote_id": f.id,
            "name": storable(f.name),
            "path": storable(f.path),
            "size": f.size,
            "mime_type": storable(f.mime_type, 255),
            "checksum": storable(f.checksum, 255),
            # A refused file keeps its reason where a retry finds it (see process_item).
            "extra": {REFUSED: f.refused} if f.refused else f.extra,
            "state": "failed" if f.refused else "pending",
            "reason": f.refused,
            "attempts": 0,
            "updated_at": utcnow(),
        }
        for f in files
    ]
    statement = _insert(session, ImportItem.__table__).on_conflict_do_nothing(
        index_elements=["import_id", "remote_id"]
    )
    session.execute(statement, rows)
    return list(
        session.scalars(
            select(ImportItem).where(
                ImportItem.import_id == import_id,
                ImportItem.remote_id.in_([f.id for f in files]),
                ImportItem.state == "pending",
            )
        )
    )


def counters(session: Session, import_ids: Iterable[str]) -> dict[str, Counters]:
    """Progress derived from item rows, so it is exact however many workers write."""
    ids = list(import_ids)
    result = {import_id: Counters() for import_id in ids}
    if not ids:
        return result
    rows = session.execute(
        select(
            ImportItem.import_id,
            ImportItem.state,
            func.count(),
            func.coalesce(func.sum(ImportItem.bytes), 0),
        )
        .where(ImportItem.import_id.in_(ids))
        .group_by(ImportItem.import_id, ImportItem.state)
    )
    tallies: dict[str, dict[str, int]] = {i: {} for i in ids}
    for import_id, state, count, nbytes in rows:
        tallies[import_id][state] = count
        tallies[import_id]["bytes"] = tallies[import_id].get("bytes", 0) + int(nbytes)
    for import_id, t in tallies.items():
        result[import_id] = Counters(
            discovered=sum(v for k, v in t.items() if k != "bytes"),
            pending=t.get("pending", 0),
            imported=t.get("done", 0),
            duplicates=t.get("duplicate", 0),
            skipped=t.get("skipped", 0),
            failed=t.get("failed", 0),
            cancelled=t.get("cancelled", 0),
            bytes=t.get("bytes", 0),
        )
    return result


def import_counters(session: Session, import_id: str) -> Counters:
    return counters(session, [import_id])[import_id]


def finish_if_complete(session: Session, import_id: str) -> str | None:
    """Once listing is over and no item is pending, settle the import's final state."""
    record = session.get(Import, import_id, populate_existing=True)
    if record is None or record.state != "importing":
        return None
    pending = session.scalar(
        select(ImportItem.id)
        .where(ImportItem.import_id == import_id, ImportItem.state == "pending")
        .limit(1)
    )
    if pending is not None:
        return None
    failed = session.scalar(
        select(ImportItem.id)
        .where(ImportItem.import_id == import_id, ImportItem.state == "failed")
        .limit(1)
    )
    state = "completed_with_failures" if failed is not None else "succeeded"
    return state if advance_import(session, import_id, state) else None


def insert_image(session: Session, image: NewImage) -> tuple[int, bool]:
    """(image id, whether this call created it). Safe against concurrent inserts."""
    statement = (
        _insert(session, Image.__table__)
        .values(**image.__dict__, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(Image.__table__.c.id)
    )
    # Two rounds: the row that made the insert conflict may be deleted before we read it.
    for _ in range(2):
        created = session.execute(statement).scalar_one_or_none()
        if created is not None:
            return int(created), True
        existing = session.scalar(select(Image.id).where(Image.sha256 == image.sha256))
        if existing is not None:
            return int(existing), False
    raise RuntimeError(f"image {image.sha256} neither inserted nor found")


def finish_item(
    session: Session,
    item_id: int,
    state: str,
    reason: str | None = None,
    image_id: int | None = None,
    nbytes: int | None = None,
) -> bool:
    """Settle a pending item; False if it was already settled (a redelivered message)."""
    result = session.execute(
        update(ImportItem)
        .where(ImportItem.id == item_id, ImportItem.state == "pending")
        .values(state=state, reason=reason, image_id=image_id, bytes=nbytes, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def note_attempt(session: Session, item_id: int, reason: str) -> None:
    session.execute(
        update(ImportItem)
        .where(ImportItem.id == item_id)
        .values(attempts=ImportItem.attempts + 1, reason=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def cancel_import(session: Session, import_id: str) -> bool:
    """Cancel an unfinished import and every item not yet processed."""
    if not advance_import(session, import_id, "cancelled"):
        return False
    session.execute(
        update(ImportItem)
        .where(ImportItem.import_id == import_id, ImportItem.state == "pending")
        .values(state="cancelled", reason="The import was cancelled.", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return True


def reopen_failed_items(session: Session, import_id: str) -> tuple[int, list[ImportItem]]:
    """Send an import's failed items round again: (the new round, the items now pending).

    The one move an import makes backwards, and only on request: from a final state with
    failures back to importing."""
    record = session.get(Import, import_id, with_for_update=True)
    if record is None or record.state not in ("completed_with_failures", "failed"):
        return 0, []
    session.execute(
        update(ImportItem)
        .where(ImportItem.import_id == import_id, ImportItem.state == "failed")
        .values(state="pending", reason=None, attempts=0, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    record.round += 1
    record.state = "importing"
    record.finished_at = None
    record.error = None
    session.flush()
    return record.round, pending_items(session, import_id)


def finish_complete_imports(session: Session) -> list[str]:
    """Settle every import whose items are all done: a safety net for a final check that
    was missed (the database was away at the moment the last item was settled)."""
    finished = []
    for import_id in session.scalars(select(Import.id).where(Import.state == "importing")):
        if finish_if_complete(session, import_id):
            finished.append(import_id)
    return finished


def unfinished_imports(session: Session) -> list[Import]:
    return list(
        session.scalars(
            select(Import)
            .where(Import.state.in_(("pending", "listing", "importing")))
            .order_by(Import.created_at)
        )
    )


def pending_items(session: Session, import_id: str) -> list[ImportItem]:
    return list(
        session.scalars(
            select(ImportItem).where(
                ImportItem.import_id == import_id, ImportItem.state == "pending"
            )
        )
    )
