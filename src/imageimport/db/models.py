"""Tables: one row per import, per remote file of an import, per distinct image, and per
request budget of a source."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from imageimport.db.types import UTCDateTime

# unchanged: the file is as an earlier import of its folder found it, and is settled with that
# import's image, without a download (see pipeline/unchanged.py). gone: the last complete
# listing of a sync round did not find the file any more (see pipeline/relist.py).
ItemState = Literal[
    "pending", "done", "duplicate", "unchanged", "skipped", "failed", "cancelled", "gone"
]
ITEM_STATES: tuple[str, ...] = get_args(ItemState)
TERMINAL_ITEM_STATES = frozenset(ITEM_STATES) - {"pending"}
ImportState = Literal[
    "pending",
    "listing",
    "importing",
    "succeeded",
    "completed_with_failures",
    "failed",
    "cancelled",
]
IMPORT_STATES: tuple[str, ...] = get_args(ImportState)
TERMINAL_IMPORT_STATES = frozenset(IMPORT_STATES[3:])
# What started a sync round (see ImportSync); the page asks through the API.
SyncTrigger = Literal["api", "cli", "schedule"]
SYNC_TRIGGERS: tuple[str, ...] = get_args(SyncTrigger)
# ready: decoded, its thumbnail stored. unverified: imported in lean mode, from its headers
# only; its thumbnail is still to make. corrupt: its pixels failed to decode when it was made.
ImageState = Literal["ready", "unverified", "corrupt"]
IMAGE_STATES: tuple[str, ...] = get_args(ImageState)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _states(states: tuple[str, ...], length: int) -> Enum:
    """A VARCHAR(length) holding these states' names, as the first migration made it (no
    database enum type, no CHECK); SQLAlchemy refuses to write or read any other value."""
    return Enum(
        *states, native_enum=False, create_constraint=False, length=length, validate_strings=True
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class Import(Base):
    __tablename__ = "imports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Set when the import is driven by something else, e.g. a Kubernetes resource's uid.
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    folder_id: Mapped[str] = mapped_column(String(255))
    state: Mapped[ImportState] = mapped_column(
        _states(IMPORT_STATES, 32), default="pending", index=True
    )
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # How many times failed items were sent round again (see Job.round).
    round: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_imports_created_at_id", "created_at", "id"),
        # Finds the earlier imports of a folder (see db.items.stored_versions).
        Index("ix_imports_provider_folder_id", "provider", "folder_id"),
    )


class ImportItem(Base):
    __tablename__ = "import_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mime_type: Mapped[str | None] = mapped_column(String(255))
    checksum: Mapped[str | None] = mapped_column(String(255))
    modified: Mapped[datetime | None] = mapped_column(UTCDateTime())  # RemoteFile.modified
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[ItemState] = mapped_column(_states(ITEM_STATES, 16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    image_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("images.id", ondelete="SET NULL"),
    )
    # The import's round (Import.round) whose listing last found the file: a sync round marks
    # the files its complete listing did not find as gone.
    seen_round: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("import_id", "remote_id", name="uq_import_items_import_remote"),
        Index("ix_import_items_import_state", "import_id", "state"),
    )


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    object_key: Mapped[str] = mapped_column(String(512))
    thumbnail_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16), index=True)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    camera: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(32), index=True)
    source_file_id: Mapped[str] = mapped_column(String(1024))
    import_id: Mapped[str | None] = mapped_column(
        ForeignKey("imports.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[ImageState] = mapped_column(
        _states(IMAGE_STATES, 16), default="ready", server_default="ready"
    )


class ImportSync(Base):
    """One sync round of an import: its folder listed again into the same import. The round is
    the import's `round` it set; the counters are what its listing found (added, changed,
    unchanged, gone) and how many images its pruning deleted."""

    __tablename__ = "import_syncs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[SyncTrigger] = mapped_column(_states(SYNC_TRIGGERS, 16))
    prune: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    listed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    added: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    gone: Mapped[int] = mapped_column(Integer, default=0)
    pruned: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("import_id", "round", name="uq_import_syncs_import_round"),)


class RequestBudgetSlot(Base):
    """Where one request budget stands (sources/budget.py): when its next request is due if
    requests went out exactly at its rate, the GCRA's theoretical arrival time. One row per
    provider and credential hash, booked by db/budgets.py on PostgreSQL; the embedded default
    keeps it in memory instead."""

    __tablename__ = "request_budgets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[datetime] = mapped_column(UTCDateTime())
