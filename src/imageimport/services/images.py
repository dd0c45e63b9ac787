"""Deleting stored images, rows and objects: one image through the API, or the images only
one import found when the operator removes its resource."""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement, and_, or_, select, update

from imageimport.db.models import Image, ImportItem
from imageimport.errors import ImageImportError
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)

# Well under SQLite's limit on the values of one statement.
_DIGESTS_PER_QUERY = 1000


def delete_images(
    runtime: Runtime, which: ColumnElement[bool], *, release_import: str | None = None
) -> int:
    """Delete the images `which` picks (see `image`, `found_only_by`); the number deleted.
    The files that found them keep their row and state, pointing at no image. With
    `release_import`, that import's files also let go of the images they share with imports
    that stay.

    Rows first: if deleting an object fails, what is left is an unreferenced object, never a
    row that points at nothing."""
    with runtime.session() as session:
        images = list(session.scalars(select(Image).where(which)))
        stored = {i.id: (i.sha256, i.object_key, i.thumbnail_key) for i in images}
        for record in images:
            session.delete(record)  # items that pointed at it keep their row (image_id NULL)
        if release_import is not None:
            # The images another import also found stay, but no longer count as this
            # import's: when that other import is removed with its images, they go too.
            session.execute(
                update(ImportItem)
                .where(ImportItem.import_id == release_import, ImportItem.image_id.is_not(None))
                .values(image_id=None)
                .execution_options(synchronize_session=False)
            )
    if not stored:
        return 0
    # Keys are content-addressed: if an import stored the same picture again meanwhile, the
    # objects are its objects now.
    digests = [sha256 for sha256, _, _ in stored.values()]
    stored_again: set[str] = set()
    with runtime.session() as session:
        for start in range(0, len(digests), _DIGESTS_PER_QUERY):
            chunk = digests[start : start + _DIGESTS_PER_QUERY]
            stored_again.update(
                session.scalars(select(Image.sha256).where(Image.sha256.in_(chunk)))
            )
    for image_id, (sha256, *keys) in stored.items():
        if sha256 in stored_again:
            continue
        for key in keys:
            try:
                runtime.store.delete(key)
            except Exception as error:
                # The row is gone, so nothing points at the object any more: harmless. The
                # store's own errors are sentences; anything else deserves its traceback.
                log.warning(
                    "image %s deleted, but not its object %s: %s",
                    image_id,
                    key,
                    error,
                    exc_info=not isinstance(error, ImageImportError),
                )
    return len(images)


def image(image_id: int) -> ColumnElement[bool]:
    return Image.id == image_id


def found_only_by(import_id: str) -> ColumnElement[bool]:
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
