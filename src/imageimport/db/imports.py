"""Imports (`imports`): recording them, moving them through their states, their progress
(derived from their items), and reading them back. Functions take a Session and leave
committing to the caller, except where a docstring says otherwise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import BigInteger, CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session

from imageimport.db.engine import insert_unless_present
from imageimport.db.items import has_items_in, pending_items
from imageimport.db.models import (
    TERMINAL_IMPORT_STATES,
    Import,
    ImportItem,
    ImportState,
    new_id,
    utcnow,
)
from imageimport.db.syncs import finish_sync

# States an import may move to from each state: it only ever moves forward.
_NEXT_STATES: dict[str, frozenset[str]] = {
    "pending": frozenset({"listing", *TERMINAL_IMPORT_STATES}),
    "listing": frozenset({"importing", *TERMINAL_IMPORT_STATES}),
    "importing": TERMINAL_IMPORT_STATES,
}
_UNFINISHED_STATES = ("pending", "listing", "importing")


class Folder(Protocol):
    """The folder an import reads, such as a `sources.base.FolderRef` (db imports no source)."""

    @property
    def provider(self) -> str: ...
    @property
    def folder_id(self) -> str: ...
    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class Counters:
    discovered: int = 0
    pending: int = 0
    imported: int = 0
    duplicates: int = 0
    unchanged: int = 0  # as an earlier import of the folder found them: not downloaded
    gone: int = 0  # no longer in the folder at a sync round's listing: not discovered
    skipped: int = 0
    failed: int = 0
    cancelled: int = 0
    bytes: int = 0

    @property
    def finished(self) -> int:
        return self.discovered - self.pending


def create_import(
    session: Session,
    ref: Folder,
    options: dict[str, Any] | None = None,
    external_id: str | None = None,
) -> Import:
    """A new import, or the existing one for `external_id`: safe to call again, and against
    a concurrent caller recording the same external id (another replica, the API)."""
    if external_id is None:
        record = Import(
            provider=ref.provider, url=ref.url, folder_id=ref.folder_id, options=options or {}
        )
        session.add(record)
        session.flush()
        return record
    existing = session.scalar(select(Import).where(Import.external_id == external_id))
    if existing is not None:
        return existing
    # A concurrent insert of the same external id makes this one do nothing (PostgreSQL waits
    # for that transaction to commit first), and the look-up below finds that row.
    session.execute(
        insert_unless_present(session, Import, "external_id").values(
            id=new_id(),
            provider=ref.provider,
            url=ref.url,
            folder_id=ref.folder_id,
            options=options or {},
            external_id=external_id,
        )
    )
    return session.scalars(select(Import).where(Import.external_id == external_id)).one()


def get_import(session: Session, import_id: str) -> Import | None:
    return session.get(Import, import_id)


def fresh_import(session: Session, import_id: str) -> Import | None:
    """The import as the database has it now, after a change made through another session
    (this session's transaction ends first)."""
    session.rollback()
    return session.get(Import, import_id, populate_existing=True)


def import_id_for(session: Session, external_id: str) -> str | None:
    return session.scalar(select(Import.id).where(Import.external_id == external_id))


def advance_import(
    session: Session, import_id: str, state: ImportState, error: str | None = None
) -> bool:
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
    moved = bool(cast(CursorResult[Any], result).rowcount)
    if moved and state in TERMINAL_IMPORT_STATES:
        # However the import ends (settled, failed, cancelled), so does its sync round.
        finish_sync(session, import_id, error)
    return moved


def begin_listing(session: Session, import_id: str) -> Import | None:
    """The import after moving it to listing, if it could still move there (its state says
    whether it did); None if it does not exist."""
    record = session.get(Import, import_id)
    if record is None:
        return None
    advance_import(session, import_id, "listing")
    session.flush()
    session.refresh(record)
    return record


def list_again(session: Session, import_id: str) -> None:
    """Send an importing import back to listing, for a retry that lists its folder again."""
    record = session.get(Import, import_id)
    if record is not None and record.state == "importing":
        record.state = "listing"


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


def finish_if_complete(session: Session, import_id: str) -> str | None:
    """Once listing is over and no item is pending, settle the import's final state."""
    record = session.get(Import, import_id, populate_existing=True)
    if record is None or record.state != "importing":
        return None
    if has_items_in(session, import_id, "pending"):
        return None
    failed = has_items_in(session, import_id, "failed")
    state: ImportState = "completed_with_failures" if failed else "succeeded"
    return state if advance_import(session, import_id, state) else None


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
            select(Import).where(Import.state.in_(_UNFINISHED_STATES)).order_by(Import.created_at)
        )
    )


def latest_unfinished_import(session: Session, provider: str, url: str) -> str | None:
    """The latest import of this folder that has not finished, if any."""
    return session.scalar(
        select(Import.id)
        .where(
            Import.provider == provider,
            Import.url == url,
            Import.state.not_in(TERMINAL_IMPORT_STATES),
        )
        .order_by(Import.created_at.desc(), Import.id.desc())
        .limit(1)
    )


def states_of_external_imports(session: Session) -> dict[str, ImportState]:
    """The state of every import driven by something else (an external id), by import id."""
    rows = session.execute(select(Import.id, Import.state).where(Import.external_id.is_not(None)))
    return {import_id: state for import_id, state in rows}


def newest_imports(
    session: Session, limit: int, after: tuple[datetime, str] | None = None
) -> list[Import]:
    """Up to `limit` imports, newest first, from the one after (created_at, id) `after` (a
    keyset page on ix_imports_created_at_id)."""
    query = select(Import).order_by(Import.created_at.desc(), Import.id.desc())
    if after is not None:
        created_at, last_id = after
        query = query.where(
            or_(
                Import.created_at < created_at,
                and_(Import.created_at == created_at, Import.id < last_id),
            )
        )
    return list(session.scalars(query.limit(limit)))


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
            # PostgreSQL sums a bigint as numeric: cast back, an int on both databases.
            func.coalesce(func.sum(ImportItem.bytes), 0).cast(BigInteger),
        )
        .where(ImportItem.import_id.in_(ids))
        .group_by(ImportItem.import_id, ImportItem.state)
    )
    tallies: dict[str, dict[str, int]] = {i: {} for i in ids}
    for import_id, state, count, nbytes in rows:
        tallies[import_id][state] = count
        tallies[import_id]["bytes"] = tallies[import_id].get("bytes", 0) + nbytes
    for import_id, t in tallies.items():
        result[import_id] = Counters(
            discovered=sum(v for k, v in t.items() if k not in ("bytes", "gone")),
            pending=t.get("pending", 0),
            imported=t.get("done", 0),
            duplicates=t.get("duplicate", 0),
            unchanged=t.get("unchanged", 0),
            skipped=t.get("skipped", 0),
            failed=t.get("failed", 0),
            cancelled=t.get("cancelled", 0),
            gone=t.get("gone", 0),
            bytes=t.get("bytes", 0),
        )
    return result


def import_counters(session: Session, import_id: str) -> Counters:
    return counters(session, [import_id])[import_id]
