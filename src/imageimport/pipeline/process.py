"""Process one listed file: download → verify → hash → metadata + thumbnail → store →
record; in lean mode, download → hash → the headers' metadata → store the original →
record it unverified. Safe to run any number of times for the same item (at-least-once
queues)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from imageimport import db
from imageimport.db.models import ImportItem, ItemState
from imageimport.errors import ForbiddenHost, ItemError
from imageimport.keys import image_key, thumbnail_key
from imageimport.pipeline.decode_budget import shared_budget
from imageimport.pipeline.download import Download, Limits, download
from imageimport.pipeline.imaging import (
    THUMBNAIL_CONTENT_TYPE,
    ImageHeader,
    ImageInfo,
    inspect,
    read_header,
)
from imageimport.pipeline.modes import mode_of
from imageimport.queue.base import Job
from imageimport.runtime import Runtime
from imageimport.sources.base import RemoteFile

log = logging.getLogger(__name__)

# A full disk or quota under the object store: worth retrying (space can be freed), but never
# forever, and the reason must say so rather than show an errno.


def process_item(
    runtime: Runtime,
    job: Job,
    heartbeat: Callable[[], None] | None = None,
    abort: threading.Event | None = None,
) -> str:
    """The item's final state. Raises TransientError (or anything unexpected) when the
    item should be tried again later, and Interrupted once `abort` is set while the file is
    downloading; permanent problems settle the item instead."""
    with runtime.session() as session:
        found = db.item_with_import(session, job.item_id)
        if found is None:
            return "gone"  # the import was deleted after the job was queued
        item, record = found
        if item.state != "pending":
            return item.state  # a redelivery of a job that was already done
        if record.state == "cancelled":
            return _settle(runtime, item, "cancelled", "The import was cancelled.")
        refused = (item.extra or {}).get(db.REFUSED)
        if refused:  # sent round again by a retry: nothing has changed
            return _settle(runtime, item, "failed", str(refused))
        remote = RemoteFile(
            id=item.remote_id,
            name=item.name,
            path=item.path,
            size=item.size,
            mime_type=item.mime_type,
            checksum=item.checksum,
            extra=dict(item.extra or {}),
        )
        source = runtime.source_for(record)
        provider = record.provider
        limits = Limits.of(runtime.settings, record.options)
        read = inspect if mode_of(record.options) == "full" else read_header
    settings = runtime.settings
    try:
        fetched = download(source, remote, limits, heartbeat, abort)
    except ItemError as error:
        return _settle(runtime, item, error.state, str(error))
    except ForbiddenHost as error:
        # Sent to a host that is not a source (a redirect): every retry would be refused too.
        return _settle(runtime, item, "failed", str(error))
    with fetched.file:
        # One transaction asks both: is the item still ours (not cancelled or settled
        # elsewhere during the download), and are these bytes stored already?
        with runtime.session() as session:
            item_state, import_state, known = db.item_states_and_image(
                session, item.id, fetched.sha256
            )
        if item_state != "pending":
            return item_state
        if import_state == "cancelled":
            return _settle(runtime, item, "cancelled", "The import was cancelled.")
        stored_as = _changed_checksum(item, fetched.checksum)
        if known is not None:
            # Identical bytes were stored before (verified, or in lean mode to be verified when
            # their thumbnail is made): nothing to decode or upload.
            return _record(runtime, item, known, fetched.size, stored_as)
        try:
            info = read(
                fetched.file,
                settings.max_image_pixels,
                settings.thumbnail_size,
                shared_budget(settings.decode_memory_bytes),
                heartbeat,
            )
        except ItemError as error:
            return _settle(runtime, item, error.state, str(error), nbytes=fetched.size)
        key = image_key(fetched.sha256, info.extension)
        thumb_key = thumbnail_key(fetched.sha256)
        fetched.file.seek(0)
        try:
            runtime.store.put_file(key, fetched.file, fetched.size, info.content_type)
            if isinstance(info, ImageInfo):
                runtime.store.put_bytes(thumb_key, info.thumbnail, THUMBNAIL_CONTENT_TYPE)
        except ItemError as error:
            # The store refuses this file for good (S3's EntityTooLarge): no retry can help.
            return _settle(runtime, item, error.state, str(error), nbytes=fetched.size)
    try:
        return _commit_image(runtime, item, provider, fetched, info, (key, thumb_key), stored_as)
    except _Superseded:
        return _current_state(runtime, item.id)


class _Superseded(Exception):
    """The item was settled by someone else (a cancel, another delivery) meanwhile."""


def _commit_image(
    runtime: Runtime,
    item: ImportItem,
    provider: str,
    fetched: Download,
    info: ImageHeader,
    keys: tuple[str, str],
    checksum: str | None,
) -> str:
    key, thumb_key = keys
    sha256, size = fetched.sha256, fetched.size
    with runtime.session() as session:
        image_id, created = db.insert_image(
            session,
            db.NewImage(
                sha256=sha256,
                object_key=key,
                thumbnail_key=thumb_key,  # lean mode: where it goes once it is made
                size=size,
                content_type=info.content_type,
                width=info.width,
                height=info.height,
                format=info.format,
                taken_at=info.taken_at,
                camera=info.camera,
                name=item.name,
                path=item.path,
                provider=provider,
                source_file_id=item.remote_id,
                import_id=item.import_id,
                state="ready" if isinstance(info, ImageInfo) else "unverified",
            ),
        )
        state = "done" if created else _own_or_duplicate(session, image_id, item)
        settled = db.finish_item(
            session, item.id, state, image_id=image_id, nbytes=size, checksum=checksum
        )
        if not settled:
            raise _Superseded  # rolls the image row back with the transaction
    return state


def _current_state(runtime: Runtime, item_id: int) -> str:
    with runtime.session() as session:
        item = db.get_item(session, item_id)
        return item.state if item is not None else "gone"


def _own_or_duplicate(session: db.Session, image_id: int, item: ImportItem) -> ItemState:
    image = db.get_image(session, image_id)
    mine = image is not None and (image.import_id, image.source_file_id) == (
        item.import_id,
        item.remote_id,
    )
    return "done" if mine else "duplicate"


def _record(
    runtime: Runtime, item: ImportItem, image_id: int, nbytes: int, checksum: str | None
) -> str:
    with runtime.session() as session:
        state = _own_or_duplicate(session, image_id, item)
        db.finish_item(session, item.id, state, image_id=image_id, nbytes=nbytes, checksum=checksum)
    return state


def _changed_checksum(item: ImportItem, checksum: str | None) -> str | None:
    """The checksum the downloaded bytes matched, when it is not the one the item was listed
    with (the file changed after it was listed); None otherwise."""
    if checksum is None or checksum == (item.checksum or "").lower():
        return None
    return checksum


def _settle(
    runtime: Runtime, item: ImportItem, state: ItemState, reason: str, nbytes: int | None = None
) -> str:
    log.info("item %s (%s): %s — %s", item.id, item.path, state, reason)
    with runtime.session() as session:
        db.finish_item(session, item.id, state, reason=reason, nbytes=nbytes)
    return state


def settle_import(runtime: Runtime, import_id: str) -> str | None:
    """Give the import its final state if this was its last item. Must run in a transaction
    of its own, after the item's commit: two workers settling the last two items at once
    would otherwise each see the other's item still pending, and neither would finish it."""
    with runtime.session() as session:
        # Nearly every item is not the last one: one indexed look-up says so, without
        # loading the import.
        pending = db.has_items_in(session, import_id, "pending")
        final = None if pending else db.finish_if_complete(session, import_id)
    if final is not None:
        runtime.forget_source(import_id)  # no file of it is left to download
    return final


def fail_item(runtime: Runtime, job: Job, reason: str) -> None:
    """Give up on an item after its last attempt."""
    with runtime.session() as session:
        db.finish_item(session, job.item_id, "failed", reason=reason)
