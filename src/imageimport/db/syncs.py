"""Sync rounds (`import_syncs`): an import's folder listed again into the same import, one
round at a time. Starting a round, counting what its listing found, closing it, and reading
the last one back. Functions take a Session and leave committing to the caller."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from imageimport.db.models import TERMINAL_IMPORT_STATES, Import, ImportSync, utcnow


@dataclass(frozen=True)
class SyncRound:
    round: int
    trigger: str
    prune: bool
    started_at: datetime
    listed_at: datetime | None
    finished_at: datetime | None
    added: int
    changed: int
    unchanged: int
    gone: int
    pruned: int
    error: str | None


def begin_sync(session: Session, import_id: str, *, prune: bool, trigger: str) -> int | None:
    """Send a finished import back to listing for a new round, and record the round; its
    number, or None when the import does not exist or has not finished (a round or the
    import itself still runs). One conditional UPDATE: of two callers at once, in this
    process or another, one starts the round and the other gets None."""
    result = session.execute(
        update(Import)
        .where(Import.id == import_id, Import.state.in_(TERMINAL_IMPORT_STATES))
        .values(state="listing", round=Import.round + 1, finished_at=None, error=None)
        .returning(Import.round)
        .execution_options(synchronize_session=False)
    )
    round_ = result.scalar_one_or_none()
    if round_ is None:
        return None
    session.add(ImportSync(import_id=import_id, round=round_, trigger=trigger, prune=prune))
    session.flush()
    return int(round_)


def sync_round(session: Session, import_id: str, round_: int) -> SyncRound | None:
    """The sync round `round_` of the import, if that round is one (a retry bumps the round
    too, and the first listing is round 0)."""
    row = session.scalar(
        select(ImportSync).where(ImportSync.import_id == import_id, ImportSync.round == round_)
    )
    return _round(row) if row is not None else None


def last_sync(session: Session, import_id: str) -> SyncRound | None:
    """The import's latest sync round, None if it never had one."""
    return last_syncs(session, [import_id]).get(import_id)


def last_syncs(session: Session, import_ids: Iterable[str]) -> dict[str, SyncRound]:
    """The latest sync round of each of these imports that had one, in one query."""
    ids = list(import_ids)
    if not ids:
        return {}
    latest = (
        select(ImportSync.import_id, func.max(ImportSync.round).label("round"))
        .where(ImportSync.import_id.in_(ids))
        .group_by(ImportSync.import_id)
        .subquery()
    )
    rows = session.scalars(
        select(ImportSync).join(
            latest,
            (ImportSync.import_id == latest.c.import_id) & (ImportSync.round == latest.c.round),
        )
    )
    return {row.import_id: _round(row) for row in rows}


def count_listed(
    session: Session, import_id: str, round_: int, *, added: int, changed: int, unchanged: int
) -> None:
    """Add what one batch of the round's listing found to its counters (nothing when the
    round is not a sync round)."""
    if not (added or changed or unchanged):
        return
    session.execute(
        update(ImportSync)
        .where(ImportSync.import_id == import_id, ImportSync.round == round_)
        .values(
            added=ImportSync.added + added,
            changed=ImportSync.changed + changed,
            unchanged=ImportSync.unchanged + unchanged,
        )
        .execution_options(synchronize_session=False)
    )


def note_listed(session: Session, import_id: str, round_: int, gone: int) -> None:
    """The round's listing is complete, and found `gone` more files missing (added: a listing
    resumed after a crash marks only the ones its first run did not)."""
    session.execute(
        update(ImportSync)
        .where(ImportSync.import_id == import_id, ImportSync.round == round_)
        .values(listed_at=utcnow(), gone=ImportSync.gone + gone)
        .execution_options(synchronize_session=False)
    )


def note_pruned(session: Session, import_id: str, round_: int, pruned: int) -> None:
    session.execute(
        update(ImportSync)
        .where(ImportSync.import_id == import_id, ImportSync.round == round_)
        .values(pruned=ImportSync.pruned + pruned)
        .execution_options(synchronize_session=False)
    )


def finish_sync(session: Session, import_id: str, error: str | None) -> None:
    """Close the import's open round, if it has one: the import has reached a final state."""
    session.execute(
        update(ImportSync)
        .where(ImportSync.import_id == import_id, ImportSync.finished_at.is_(None))
        .values(finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )


def _round(row: ImportSync) -> SyncRound:
    return SyncRound(
        round=row.round,
        trigger=row.trigger,
        prune=row.prune,
        started_at=row.started_at,
        listed_at=row.listed_at,
        finished_at=row.finished_at,
        added=row.added,
        changed=row.changed,
        unchanged=row.unchanged,
        gone=row.gone,
        pruned=row.pruned,
        error=row.error,
    )
