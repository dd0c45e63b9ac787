"""Stored images (`images`), one row per distinct content: recording one, finding and
paging through them, and deleting them. Functions take a Session and leave committing to
the caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session

from imageimport.db.engine import insert_unless_present
from imageimport.db.models import Image, ImageState, ImportItem, utcnow

# Which images to delete: see `one_image` and `found_only_by`.
ImageSelection = ColumnElement[bool]

# Well under SQLite's limit on the values of one statement.
_DIGESTS_PER_QUERY = 1000


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
    # unverified: imported in lean mode, its thumbnail not made yet.
    state: ImageState = "ready"


@dataclass(frozen=True)
class ImageFilter:
    """What a listing of images is narrowed to; None (or empty) narrows nothing."""

    # Every image this import found, duplicates included (not only those it stored first).
    import_id: str | None = None
    provider: str | None = None
    format: str | None = None
    # A case-insensitive part of the file name.
    name: str | None = None
    taken_after: datetime | None = None  # at or after
    taken_before: datetime | None = None  # strictly before


@dataclass(frozen=True)
class DeletedImage:
    id: int
    sha256: str
    object_key: str
    thumbnail_key: str


def insert_image(session: Session, image: NewImage) -> tuple[int, bool]:
    """(image id, whether this call created it). Safe against concurrent inserts."""
    statement = insert_unless_present(session, Image, "sha256", returning="id")
    values = {**image.__dict__, "created_at": utcnow()}
    # Two rounds: the row that made the insert conflict may be deleted before we read it.
    for _ in range(2):
        # On the connection: the ORM's layer around a Core statement costs CPU for nothing.
        created = session.connection().execute(statement, values).scalar_one_or_none()
        if created is not None:
            return int(created), True
        existing = image_id_with_digest(session, image.sha256)
        if existing is not None:
            return existing, False
    raise RuntimeError(f"image {image.sha256} neither inserted nor found")


def get_image(session: Session, image_id: int) -> Image | None:
    return session.get(Image, image_id)


def change_image_state(
    session: Session, image_id: int, state: ImageState, *, was: ImageState
) -> bool:
    """Move the image from state `was` to `state`; False when it is not (or no longer) in
    `was`: another process got there first, or the image was deleted."""
    result = session.execute(
        update(Image)
        .where(Image.id == image_id, Image.state == was)
        .values(state=state)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], result).rowcount)


def image_id_with_digest(session: Session, sha256: str) -> int | None:
    """The image of these bytes, if they are stored already."""
    found = session.scalar(select(Image.id).where(Image.sha256 == sha256))
    return int(found) if found is not None else None


def image_page(
    session: Session,
    filters: ImageFilter,
    limit: int,
    *,
    after: int | None = None,
    newest_first: bool = False,
) -> list[Image]:
    """Up to `limit` images by id (descending when `newest_first`), from the one after
    image `after` in that order (a keyset page on the primary key)."""
    query = select(Image).order_by(Image.id.desc() if newest_first else Image.id)
    if filters.import_id is not None:
        found = select(ImportItem.image_id).where(
            ImportItem.import_id == filters.import_id, ImportItem.image_id.is_not(None)
        )
        query = query.where(Image.id.in_(found))
    if filters.provider is not None:
        query = query.where(Image.provider == filters.provider)
    if filters.format is not None:
        query = query.where(Image.format == filters.format)
    if filters.name:
        # Lowered here as well as in SQL: SQLite's lower() (and PostgreSQL's under the C
        # locale) only folds ASCII letters.
        name = filters.name.lower()
        query = query.where(func.lower(Image.name).contains(name, autoescape=True))
    if filters.taken_after is not None:
        query = query.where(Image.taken_at >= filters.taken_after)
    if filters.taken_before is not None:
        query = query.where(Image.taken_at < filters.taken_before)
    if after is not None:
        query = query.where(Image.id < after if newest_first else Image.id > after)
    return list(session.scalars(query.limit(limit)))


def one_image(image_id: int) -> ImageSelection:
    return Image.id == image_id


def found_only_by(import_id: str) -> ImageSelection:
    """The images this import found that no other import also found."""
    found_here = select(ImportItem.image_id).where(
        ImportItem.import_id == import_id, ImportItem.image_id.is_not(None)
    )
    found_elsewhere = select(ImportItem.image_id).where(
        ImportItem.import_id != import_id, ImportItem.image_id.is_not(None)
    )
    return and_(
        or_(Image.id.in_(found_here), Image.import_id == import_id),
        Image.id.not_in(found_elsewhere),
    )


def gone_from(import_id: str) -> ImageSelection:
    """The images of this import's gone files that no file still in a folder (of any import)
    points at: what pruning the import deletes."""
    gone_here = select(ImportItem.image_id).where(
        ImportItem.import_id == import_id,
        ImportItem.state == "gone",
        ImportItem.image_id.is_not(None),
    )
    held = select(ImportItem.image_id).where(
        ImportItem.state != "gone", ImportItem.image_id.is_not(None)
    )
    return and_(Image.id.in_(gone_here), Image.id.not_in(held))


def delete_images(
    session: Session, which: ImageSelection, *, release_import: str | None = None
) -> list[DeletedImage]:
    """Delete the image rows `which` picks; what they were (their objects are the caller's
    to delete). The files that found them keep their row and state, pointing at no image.
    With `release_import`, that import's files also let go of the images they share with
    imports that stay."""
    images = list(session.scalars(select(Image).where(which)))
    deleted = [DeletedImage(i.id, i.sha256, i.object_key, i.thumbnail_key) for i in images]
    for record in images:
        session.delete(record)  # items that pointed at it keep their row (image_id NULL)
    if release_import is not None:
        # The images another import also found stay, but no longer count as this import's:
        # when that other import is removed with its images, they go too.
        session.execute(
            update(ImportItem)
            .where(ImportItem.import_id == release_import, ImportItem.image_id.is_not(None))
            .values(image_id=None)
            .execution_options(synchronize_session=False)
        )
    return deleted


def stored_digests(session: Session, digests: Sequence[str]) -> set[str]:
    """Which of these contents are stored (as an image row) now."""
    stored: set[str] = set()
    for start in range(0, len(digests), _DIGESTS_PER_QUERY):
        chunk = digests[start : start + _DIGESTS_PER_QUERY]
        stored.update(session.scalars(select(Image.sha256).where(Image.sha256.in_(chunk))))
    return stored
