"""Thumbnails of images imported in lean mode, made after their import: the stored original
read back and decoded as a full-mode import decodes it (the same bounds, the same decode
budget), its thumbnail stored, and the image marked ready; or marked corrupt when its pixels
turn out to be damaged."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from imageimport import db
from imageimport.db.models import ImageState
from imageimport.errors import ImageTooLarge, ItemError
from imageimport.pipeline.decode_budget import shared_budget
from imageimport.pipeline.imaging import THUMBNAIL_CONTENT_TYPE, inspect
from imageimport.runtime import Runtime

log = logging.getLogger(__name__)

# Held in memory below this, on disk above: requests for thumbnails run on the API's thread
# pool (tens of threads), whose originals must not add up beside the decode budget.
_SPOOL_BYTES = 1024 * 1024


class _OnePerImage:
    """A lock per image, held by whoever makes its thumbnail in this process: a second
    request for it waits, then finds it made, instead of decoding the image again."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[int, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, image_id: int) -> Iterator[None]:
        with self._guard:
            lock, users = self._held.get(image_id, (threading.Lock(), 0))
            self._held[image_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._held[image_id]
                if users == 1:
                    del self._held[image_id]
                else:
                    self._held[image_id] = (lock, users - 1)


_making = _OnePerImage()


def make_thumbnail(
    runtime: Runtime, image_id: int, heartbeat: Callable[[], None] | None = None
) -> ImageState | None:
    """The image's state once its thumbnail is made: ready, or corrupt when its pixels could
    not be decoded; unverified when it cannot be made at all here (it would not fit the decode
    budget); None when the image does not exist. An image that is not unverified is left as
    it is. Raises KeyError when its original is missing from the store, and the store's
    ImageImportError when the store cannot be read or written."""
    with _making.hold(image_id):
        with runtime.session() as session:
            image = db.get_image(session, image_id)
            if image is None or image.state != "unverified":
                return None if image is None else image.state
            key, thumb_key, sha256 = image.object_key, image.thumbnail_key, image.sha256
        settings = runtime.settings
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            # Opened in binary mode (w+b): a BinaryIO, which typeshed knows as an IO[bytes].
            file = cast(BinaryIO, spool)
            for chunk in runtime.store.iter_bytes(key):
                file.write(chunk)
            try:
                info = inspect(
                    file,
                    settings.max_image_pixels,
                    settings.thumbnail_size,
                    shared_budget(settings.decode_memory_bytes),
                    heartbeat,
                )
            except ImageTooLarge as error:
                # Only with a smaller DECODE_MEMORY_BYTES here than where it was imported.
                log.warning("image %s: no thumbnail made: %s", image_id, error)
                return "unverified"
            except ItemError as error:
                log.info("image %s is corrupt: %s", image_id, error)
                return _settle(runtime, image_id, "corrupt")
        runtime.store.put_bytes(thumb_key, info.thumbnail, THUMBNAIL_CONTENT_TYPE)
        state = _settle(runtime, image_id, "ready")
        if state is None:
            # Deleted while its thumbnail was made: the thumbnail is nobody's (unless the same
            # picture was stored again meanwhile: keys are content-addressed).
            with runtime.session() as session:
                if not db.stored_digests(session, [sha256]):
                    runtime.store.delete(thumb_key)
        return state


def _settle(runtime: Runtime, image_id: int, state: ImageState) -> ImageState | None:
    with runtime.session() as session:
        if db.change_image_state(session, image_id, state, was="unverified"):
            return state
        # Settled by another process meanwhile, or deleted.
        image = db.get_image(session, image_id)
        return None if image is None else image.state
