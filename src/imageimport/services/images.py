"""Deleting stored images, rows and objects: one image through the API, the images only
one import found when the operator removes its resource, or the images of an import's gone
files when a sync round prunes them."""

from __future__ import annotations

import logging

from imageimport import db
from imageimport.errors import ImageImportError
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)


def delete_images(
    runtime: Runtime, which: db.ImageSelection, *, release_import: str | None = None
) -> int:
    """Delete the images `which` picks (`db.one_image`, `db.found_only_by`): their rows, then
    their objects; the number deleted. See `db.delete_images` for `release_import`.

    Rows first: if deleting an object fails, what is left is an unreferenced object, never a
    row that points at nothing."""
    with runtime.session() as session:
        deleted = db.delete_images(session, which, release_import=release_import)
    if not deleted:
        return 0
    # Keys are content-addressed: if an import stored the same picture again meanwhile, the
    # objects are its objects now.
    with runtime.session() as session:
        stored_again = db.stored_digests(session, [image.sha256 for image in deleted])
    for image in deleted:
        if image.sha256 in stored_again:
            continue
        for key in (image.object_key, image.thumbnail_key):
            try:
                runtime.store.delete(key)
            except Exception as error:
                # The row is gone, so nothing points at the object any more: harmless. The
                # store's own errors are sentences; anything else deserves its traceback.
                log.warning(
                    "image %s deleted, but not its object %s: %s",
                    image.id,
                    key,
                    error,
                    exc_info=not isinstance(error, ImageImportError),
                )
    return len(deleted)


def prune_gone(runtime: Runtime, import_id: str) -> int:
    """Delete the images of the import's gone files that no file still in a folder holds."""
    return delete_images(runtime, db.gone_from(import_id))
