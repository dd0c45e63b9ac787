"""The files an import found (`import_items`): recording them as a listing finds them,
settling each one, and reading them back. Functions take a Session and leave committing to
the caller."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast, overload

from sqlalchemy import CursorResult, bindparam, func, select, update
from sqlalchemy.orm import Session

from imageimport.db.engine import insert_unless_present
from imageimport.db.models import Image, Import, ImportItem, ItemState, utcnow


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
    def modified(self) -> datetime | None: ...
    @property
    def extra(self) -> dict[str, Any]: ...
    @property
    def refused(self) -> str | None: ...


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


# What a listing writes of a file it found, whether new to the import or found again.
_LISTED_COLUMNS = (
    "name",
    "path",
    "size",
    "mime_type",
    "checksum",
    "modified",
    "extra",
    "state",
    "reason",
    "attempts",
    "image_id",
    "bytes",
    "seen_round",
    "updated_at",
)


def _listed(file: ListedFile, unchanged: Mapping[str, int], seen_round: int) -> dict[str, Any]:
    """The values of _LISTED_COLUMNS for a file a listing found (see `add_items`)."""
    return {
        "name": storable(file.name),
        "path": storable(file.path),
        "size": file.size,
        "mime_type": storable(file.mime_type, 255),
        "checksum": storable(file.checksum, 255),
        "modified": file.modified,
        # A refused file keeps its reason where a retry finds it (see process_item).
        "extra": {REFUSED: file.refused} if file.refused else file.extra,
        "state": "failed" if file.refused else "unchanged" if file.id in unchanged else "pending",
        "reason": file.refused,
        "attempts": 0,
        "image_id": None if file.refused else unchanged.get(file.id),
        "bytes": None,
        "seen_round": seen_round,
        "updated_at": utcnow(),
    }


def add_items(
    session: Session,
    import_id: str,
    files: Sequence[ListedFile],
    unchanged: Mapping[str, int] | None = None,
    *,
    seen_round: int = 0,
) -> list[ImportItem]:
    """Record listed files (idempotent per remote id) and return the ones still pending.
    Refused files (`ListedFile.refused`) are recorded as failed with their reason; the files
    `unchanged` names (remote id -> the image an earlier import found) as unchanged.
    `seen_round`: the import's round whose listing found them."""
    if not files:
        return []
    unchanged = unchanged or {}
    rows = [
        {"import_id": import_id, "remote_id": f.id, **_listed(f, unchanged, seen_round)}
        for f in files
    ]
    statement = insert_unless_present(session, ImportItem, "import_id", "remote_id")
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


@dataclass(frozen=True)
class RecordedFile:
    """A file as its import recorded it, for a listing of the same import to compare."""

    id: int
    state: ItemState
    checksum: str | None
    size: int | None
    modified: datetime | None
    seen_round: int


def recorded_files(
    session: Session, import_id: str, remote_ids: Sequence[str]
) -> dict[str, RecordedFile]:
    """These files as the import recorded them, by remote id (one indexed look-up)."""
    if not remote_ids:
        return {}
    rows = session.execute(
        select(
            ImportItem.remote_id,
            ImportItem.id,
            ImportItem.state,
            ImportItem.checksum,
            ImportItem.size,
            ImportItem.modified,
            ImportItem.seen_round,
        ).where(ImportItem.import_id == import_id, ImportItem.remote_id.in_(remote_ids))
    )
    return {
        remote_id: RecordedFile(item_id, state, checksum, size, modified, seen_round)
        for remote_id, item_id, state, checksum, size, modified, seen_round in rows
    }


# The names of the new values differ from the columns': SQLAlchemy keeps those for itself.
_RELIST_ITEM = (
    update(ImportItem)
    .where(ImportItem.id == bindparam("item_id"))
    .values({column: bindparam(f"new_{column}") for column in _LISTED_COLUMNS})
    .execution_options(synchronize_session=False)
)


def relist_items(
    session: Session,
    files: Sequence[tuple[int, ListedFile]],
    unchanged: Mapping[str, int],
    seen_round: int,
) -> None:
    """Record again, as `add_items` records a new file, files the import has already: each
    (item id, file as listed now), to be imported again."""
    if files:
        # On the connection: one executemany of this UPDATE, not the ORM's bulk update.
        session.connection().execute(
            _RELIST_ITEM,
            [
                {
                    "item_id": item_id,
                    **{f"new_{k}": v for k, v in _listed(f, unchanged, seen_round).items()},
                }
                for item_id, f in files
            ],
        )


def mark_seen(session: Session, item_ids: Sequence[int], seen_round: int) -> None:
    """These items' files were found, as recorded, by the listing of round `seen_round`."""
    if item_ids:
        session.execute(
            update(ImportItem)
            .where(ImportItem.id.in_(item_ids))
            .values(seen_round=seen_round)
            .execution_options(synchronize_session=False)
        )


def mark_gone(session: Session, import_id: str, seen_round: int) -> int:
    """The import's files that the complete listing of round `seen_round` did not find are
    gone; how many went now. They keep their image (pruning is a separate decision)."""
    result = session.execute(
        update(ImportItem)
        .where(
            ImportItem.import_id == import_id,
            ImportItem.seen_round != seen_round,
            ImportItem.state != "gone",
        )
        .values(state="gone", reason="The file is no longer in the folder.", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass(frozen=True)
class StoredVersion:
    """A file as an import found it, and the image its bytes are stored as."""

    checksum: str | None
    size: int | None
    modified: datetime | None
    image_id: int


def stored_versions(
    session: Session, provider: str, folder_id: str, remote_ids: Sequence[str]
) -> dict[str, StoredVersion]:
    """The last version of each of these files that an import of this folder stored or found
    stored, by remote id; files never stored (or whose image was deleted) are left out.
    Scoped to the folder because some ids are only unique within it (a ZIP entry's path).

    Two queries per call, whatever the number of files, each on an index: the imports of the
    folder (ix_imports_provider_folder_id), then these files among their items
    (uq_import_items_import_remote, by both of its columns). The images found are locked
    against deletion (PostgreSQL's FOR KEY SHARE) until the caller commits, so that items it
    records pointing at them never point at a deleted one."""
    if not remote_ids:
        return {}
    imports = list(
        session.scalars(
            select(Import.id).where(Import.provider == provider, Import.folder_id == folder_id)
        )
    )
    last = (
        select(func.max(ImportItem.id))
        .where(
            ImportItem.import_id.in_(imports),
            ImportItem.remote_id.in_(remote_ids),
            # Only a file stored (done, duplicate, unchanged) points at an image. No condition
            # on the state: SQLite would then walk ix_import_items_import_state, every stored
            # file of each import, rather than look these files up.
            ImportItem.image_id.is_not(None),
        )
        .group_by(ImportItem.remote_id)
    )
    rows = session.execute(
        select(
            ImportItem.remote_id,
            ImportItem.checksum,
            ImportItem.size,
            ImportItem.modified,
            Image.id,
        )
        .join(Image, Image.id == ImportItem.image_id)
        .where(ImportItem.id.in_(last))
        .with_for_update(read=True, key_share=True, of=Image)
    )
    return {
        remote_id: StoredVersion(checksum, size, modified, image_id)
        for remote_id, checksum, size, modified, image_id in rows
    }


def get_item(session: Session, item_id: int) -> ImportItem | None:
    return session.get(ImportItem, item_id)


# The statements a worker runs for every file, built once: SQLAlchemy then skips building
# them and computing their cache keys on every call (a good part of the client's CPU per file).
# Those that load no ORM object run on the session's connection: the ORM's layer around a
# statement cost as much client CPU again (py-spy, bench/RESULTS.md).
_ITEM_WITH_IMPORT = (
    select(ImportItem, Import)
    .join(Import, Import.id == ImportItem.import_id)
    .where(ImportItem.id == bindparam("item_id"))
)
_STATES_AND_IMAGE = (
    select(
        ImportItem.state,
        Import.state,
        select(Image.id).where(Image.sha256 == bindparam("sha256")).scalar_subquery(),
    )
    .join(Import, Import.id == ImportItem.import_id)
    .where(ImportItem.id == bindparam("item_id"))
)
_ANY_ITEM_IN = (
    select(ImportItem.id)
    .where(ImportItem.import_id == bindparam("import_id"), ImportItem.state == bindparam("state"))
    .limit(1)
)
# The names of the new values differ from the columns': SQLAlchemy keeps those for itself.
_FINISH_ITEM = (
    update(ImportItem)
    .where(ImportItem.id == bindparam("item_id"), ImportItem.state == "pending")
    .values(
        state=bindparam("new_state"),
        reason=bindparam("new_reason"),
        image_id=bindparam("new_image_id"),
        bytes=bindparam("new_bytes"),
        checksum=func.coalesce(bindparam("new_checksum"), ImportItem.checksum),
        updated_at=bindparam("new_updated_at"),
    )
    .execution_options(synchronize_session=False)
)


def item_with_import(session: Session, item_id: int) -> tuple[ImportItem, Import] | None:
    """The item and its import, in one round trip (None once deleted)."""
    row = session.execute(_ITEM_WITH_IMPORT, {"item_id": item_id}).first()
    return (row[0], row[1]) if row is not None else None


def item_states_and_image(
    session: Session, item_id: int, sha256: str
) -> tuple[str, str, int | None]:
    """The item's state, its import's ("gone" once deleted), and the stored image with
    this digest if there is one, in one round trip."""
    row = (
        session.connection()
        .execute(_STATES_AND_IMAGE, {"item_id": item_id, "sha256": sha256})
        .first()
    )
    if row is None:
        return "gone", "gone", None
    return str(row[0]), str(row[1]), (int(row[2]) if row[2] is not None else None)


def has_items_in(session: Session, import_id: str, state: ItemState) -> bool:
    """Whether any item of the import is in `state`: one indexed look-up."""
    found = session.scalar(_ANY_ITEM_IN, {"import_id": import_id, "state": state})
    return found is not None


def finish_item(
    session: Session,
    item_id: int,
    state: ItemState,
    reason: str | None = None,
    image_id: int | None = None,
    nbytes: int | None = None,
    checksum: str | None = None,
) -> bool:
    """Settle a pending item; False if it was already settled (a redelivered message).
    `checksum` replaces the listed one: the file changed after it was listed, and the item
    records the version whose bytes were stored, as the next import compares it."""
    result = session.connection().execute(
        _FINISH_ITEM,
        {
            "item_id": item_id,
            "new_state": state,
            "new_reason": reason,
            "new_image_id": image_id,
            "new_bytes": nbytes,
            "new_checksum": checksum,
            "new_updated_at": utcnow(),
        },
    )
    return bool(cast(CursorResult[Any], result).rowcount)


def note_attempt(session: Session, item_id: int, reason: str) -> None:
    session.execute(
        update(ImportItem)
        .where(ImportItem.id == item_id)
        .values(attempts=ImportItem.attempts + 1, reason=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def pending_items(session: Session, import_id: str) -> list[ImportItem]:
    return list(
        session.scalars(
            select(ImportItem).where(
                ImportItem.import_id == import_id, ImportItem.state == "pending"
            )
        )
    )


def failed_files(session: Session, import_id: str, limit: int) -> list[tuple[str, str | None]]:
    """(path, reason) of the import's failed files, by path."""
    rows = session.execute(
        select(ImportItem.path, ImportItem.reason)
        .where(ImportItem.import_id == import_id, ImportItem.state == "failed")
        .order_by(ImportItem.path)
        .limit(limit)
    )
    return [(path, reason) for path, reason in rows]


def latest_settled_path(session: Session, import_id: str) -> str | None:
    """The path of the import's file settled last: what it is working on about now."""
    return session.scalar(
        select(ImportItem.path)
        .where(ImportItem.import_id == import_id, ImportItem.state != "pending")
        .order_by(ImportItem.updated_at.desc(), ImportItem.id.desc())
        .limit(1)
    )


def item_page(
    session: Session,
    import_id: str,
    limit: int,
    *,
    state: ItemState | None = None,
    after: int | None = None,
) -> list[ImportItem]:
    """Up to `limit` of the import's files in listing order (item id ascending), from the
    one after item `after` (a keyset page)."""
    query = select(ImportItem).where(ImportItem.import_id == import_id).order_by(ImportItem.id)
    if state is not None:
        query = query.where(ImportItem.state == state)
    if after is not None:
        query = query.where(ImportItem.id > after)
    return list(session.scalars(query.limit(limit)))
