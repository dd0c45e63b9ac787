"""List a folder and fan it out: record each file as an item and publish one job per item,
page by page, so importing starts long before a big folder is fully listed. Files unchanged
since an earlier import of the folder are settled as they are recorded, with no job.

A sync round lists the folder again into the same import (see `relist`): once its listing is
complete, the files it did not find are gone, and with pruning their images are deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tenacity

from imageimport import db
from imageimport.errors import ImageImportError, TransientError
from imageimport.pipeline.process import settle_import
from imageimport.pipeline.relist import sort_listed
from imageimport.pipeline.unchanged import unchanged_files
from imageimport.queue.base import Job, JobQueue
from imageimport.runtime import Runtime
from imageimport.sources.base import RemoteFile, Source
from imageimport.sources.listing import bounded_listing

log = logging.getLogger(__name__)

BATCH_SIZE = 200
LISTING_ATTEMPTS = 3


def plan_import(
    runtime: Runtime, queue: JobQueue, import_id: str, prune: Callable[[str], int]
) -> str:
    """List and publish; returns the import's state afterwards. Running it again for the
    same import (e.g. after a crash mid-listing) publishes nothing twice: items are unique
    per remote file and jobs carry a de-duplication id. `prune` deletes the images of an
    import's gone files (the number deleted), for a sync round that asks for it."""
    with runtime.session() as session:
        record = db.begin_listing(session, import_id)
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        if record.state != "listing":
            return record.state
        round_ = record.round
        source = runtime.source_for(record)

    try:
        listed = _listing_attempts(import_id)(_list_and_publish, runtime, queue, import_id, source)
    except ImageImportError as error:
        return _fail(runtime, import_id, error)
    if not listed:
        return "cancelled"

    # The listing is complete: only now may a sync round call a file it did not find gone.
    with runtime.session() as session:
        sync = db.sync_round(session, import_id, round_)
        if sync is not None:
            db.note_listed(session, import_id, round_, db.mark_gone(session, import_id, round_))
    if sync is not None and sync.prune:
        pruned = prune(import_id)
        with runtime.session() as session:
            db.note_pruned(session, import_id, round_, pruned)

    with runtime.session() as session:
        db.advance_import(session, import_id, "importing")
    # Nothing may be left to download (e.g. every file was unchanged): settled as a worker
    # settles the last item, which also lets the source go (a ZIP holds the folder on disk).
    return settle_import(runtime, import_id) or "importing"


def _listing_attempts(import_id: str) -> tenacity.Retrying:
    """A listing that failed transiently starts over, a few seconds later. Each request
    already had its own retries; starting the whole listing again is safe because items and
    jobs are de-duplicated. Other failures end the listing at once."""

    def listing_again(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("listing import %s: %s; listing again", import_id, error)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(LISTING_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=2, max=30),  # 2 s, then 4 s
        before_sleep=listing_again,
        reraise=True,
    )


def _list_and_publish(runtime: Runtime, queue: JobQueue, import_id: str, source: Source) -> bool:
    batch: list[RemoteFile] = []
    try:
        for remote in bounded_listing(source.list(), runtime.settings):
            batch.append(remote)
            if len(batch) >= BATCH_SIZE:
                if not _publish(runtime, queue, import_id, batch):
                    return False
                batch = []
    except ImageImportError:
        # However the listing ends, what it found until then is imported.
        _publish(runtime, queue, import_id, batch)
        raise
    return _publish(runtime, queue, import_id, batch)


def _fail(runtime: Runtime, import_id: str, error: ImageImportError) -> str:
    log.warning("listing import %s failed: %s", import_id, error)
    with runtime.session() as session:
        db.advance_import(session, import_id, "failed", error=str(error))
    return "failed"


def _publish(runtime: Runtime, queue: JobQueue, import_id: str, files: list[RemoteFile]) -> bool:
    """Record then publish a batch; False when the import was cancelled meanwhile."""
    with runtime.session() as session:
        record = db.get_import(session, import_id)
        if record is None or record.state == "cancelled":
            return False
        round_ = record.round
        recorded = db.recorded_files(session, import_id, [file.id for file in files])
        found = sort_listed(files, recorded, round_)
        unchanged = unchanged_files(session, record, found.new + [f for _, f in found.again])
        db.relist_items(session, found.again, unchanged, round_)
        db.mark_seen(session, found.seen, round_)
        # Pending among all of them: also those this round recorded before a crash, whose
        # jobs the queue drops if it has them already.
        pending = db.add_items(session, import_id, files, unchanged, seen_round=round_)
        db.count_listed(
            session,
            import_id,
            round_,
            added=found.added,
            changed=found.changed,
            unchanged=found.unchanged,
        )
        jobs = [Job(import_id, item.id, item.remote_id, round_) for item in pending]
    # Published only after the rows are committed, so a worker always finds its item.
    queue.publish(jobs)
    return True
