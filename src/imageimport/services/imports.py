"""Starting, cancelling, retrying and resuming imports: what the CLI, the API and the
operator share. Listing runs in background threads of the calling process.

An import can also be recorded for a resource, under its uid (`imports.external_id`):
`ensure_import` records it and has it listed, idempotently: a restarted operator, a second
replica or the API recording the same uid all end up with one import row, and planning
publishes each file once (items are unique per file, messages carry a de-duplication id). An
import still `listing` after a restart is listed again from the start, which publishes nothing
twice.

Source credentials (spec.source.credentialsSecretRef): the operator reads the Secret and passes
its values in; they are kept in memory only, and the import's options record just the Secret's
name (see `imageimport.services.credentials`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from imageimport import db
from imageimport.db.models import TERMINAL_IMPORT_STATES
from imageimport.errors import SyncRefused
from imageimport.pipeline.plan import plan_import
from imageimport.queue.base import Job, JobQueue
from imageimport.runtime import Runtime
from imageimport.services.credentials import CredentialedRuntime, SecretRef
from imageimport.services.images import prune_gone
from imageimport.services.options import check_spec, import_options, with_mode
from imageimport.sources.registry import parse_folder_url

log = logging.getLogger(__name__)


class Importer:
    def __init__(self, runtime: Runtime, queue: JobQueue) -> None:
        self.runtime = runtime
        self.queue = queue
        self._planners: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(
        self, url: str, options: dict[str, Any] | None = None, external_id: str | None = None
    ) -> str:
        """Record a new import and start listing it; InvalidSourceURL for a bad link."""
        ref = parse_folder_url(url)
        with self.runtime.session() as session:
            import_id = db.create_import(
                session, ref, with_mode(options, self.runtime.settings), external_id
            ).id
        self.plan_in_background(import_id)
        return import_id

    def plan_in_background(self, import_id: str) -> None:
        with self._lock:
            running = self._planners.get(import_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._plan, args=(import_id,), name=f"plan-{import_id[:8]}", daemon=True
            )
            self._planners[import_id] = thread
            thread.start()

    def _plan(self, import_id: str) -> None:
        try:
            plan_import(self.runtime, self.queue, import_id, self._prune)
        except Exception as error:
            log.exception("planning import %s crashed", import_id)
            try:
                with self.runtime.session() as session:
                    # One line: the rest of a database error is the statement and its values.
                    first = str(error).splitlines()[0][:500] if str(error) else type(error).__name__
                    db.advance_import(
                        session, import_id, "failed", error=f"Internal error while listing: {first}"
                    )
            except Exception:
                log.exception("cannot record the failure of import %s", import_id)

    def _prune(self, import_id: str) -> int:
        return prune_gone(self.runtime, import_id)

    def is_planning(self, import_id: str) -> bool:
        with self._lock:
            thread = self._planners.get(import_id)
        return thread is not None and thread.is_alive()

    def resume_interrupted(self) -> list[str]:
        """Carry on every unfinished import (see `resume`); the ones carried on."""
        with self.runtime.session() as session:
            unfinished = [record.id for record in db.unfinished_imports(session)]
        return [import_id for import_id in unfinished if self.resume(import_id)]

    def resume(self, import_id: str) -> bool:
        """Carry on an import whose process stopped (a crash, a restart): list it again if its
        listing was cut short, and with a queue that did not outlive that process, publish its
        pending files again. False when there is nothing to do here: the import is finished,
        or it is listed and a durable queue holds its files for the workers.

        Safe while another process still works on it: items are settled once, and images are
        unique by content, so the worst case is a file downloaded twice."""
        with self.runtime.session() as session:
            record = db.get_import(session, import_id)
            if record is None or record.state in TERMINAL_IMPORT_STATES:
                return False
            state = record.state
            jobs: list[Job] = []
            if not self.queue.durable:
                jobs = [
                    Job(import_id, item.id, item.remote_id, record.round)
                    for item in db.pending_items(session, import_id)
                ]
        listing = state in ("pending", "listing")
        if not listing and self.queue.durable:
            return False
        if jobs:
            # Before listing again: a listing that fails now must not leave the files listed
            # earlier pending for good. The queue drops the ones the listing publishes again.
            log.info("publishing %d pending files of import %s again", len(jobs), import_id)
            self.queue.publish(jobs)
        if listing:
            log.info("resuming the listing of import %s", import_id)
            self.plan_in_background(import_id)
        else:
            # The process may have stopped between settling the last file and the import.
            with self.runtime.session() as session:
                db.finish_if_complete(session, import_id)
        return True

    def sync(self, import_id: str, *, prune: bool = False, trigger: str = "api") -> int:
        """Start a sync round of a finished import: its folder listed again into it (see
        `pipeline.relist`); the round's number. With `prune`, the images of the files the
        round finds gone are deleted, unless another file still holds them. `trigger`: what
        asked for it ('api': the API and the page, 'cli', 'schedule'). Raises SyncRefused
        while a round or the import itself runs, LookupError for an unknown import."""
        if self.is_planning(import_id):
            # Finished, but this process's planner has not returned yet (a cancelled listing).
            raise _still_running(import_id)
        with self.runtime.session() as session:
            round_ = db.begin_sync(session, import_id, prune=prune, trigger=trigger)
            if round_ is None:
                if db.get_import(session, import_id) is None:
                    raise LookupError(f"import {import_id} does not exist")
                raise _still_running(import_id)
        log.info("sync round %d of import %s (%s)", round_, import_id, trigger)
        self.plan_in_background(import_id)
        return round_

    def unfinished_import_of(self, url: str) -> str | None:
        """The latest import of this folder that has not finished, if any."""
        ref = parse_folder_url(url)
        with self.runtime.session() as session:
            return db.latest_unfinished_import(session, ref.provider, ref.url)

    def cancel(self, import_id: str) -> bool:
        """Stop an import: its remaining items are settled as cancelled, not processed."""
        with self.runtime.session() as session:
            cancelled = db.cancel_import(session, import_id)
        if cancelled and not self.is_planning(import_id):
            self.runtime.forget_source(import_id)
        return cancelled

    def retry(self, import_id: str) -> int:
        """Publish an import's failed items again; the number of items sent round again.
        An import whose listing failed is listed again instead."""
        with self.runtime.session() as session:
            record = db.get_import(session, import_id)
            relist = record is not None and record.state == "failed" and record.started_at
            round_, items = db.reopen_failed_items(session, import_id)
            jobs = [Job(import_id, item.id, item.remote_id, round_) for item in items]
        self.queue.publish(jobs)
        if relist:
            self._relist(import_id)
        return len(jobs)

    def _relist(self, import_id: str) -> None:
        with self.runtime.session() as session:
            db.list_again(session, import_id)
        self.plan_in_background(import_id)

    def wait(self, timeout: float | None = None) -> None:
        with self._lock:
            threads = list(self._planners.values())
        for thread in threads:
            thread.join(timeout)


def _still_running(import_id: str) -> SyncRefused:
    return SyncRefused(
        f"Import {import_id} is still running; a sync round can start once it has finished."
    )


# -- imports recorded for a resource (the ImageImport's uid as external id) ------------------


def record_import(
    runtime: Runtime, uid: str, spec: Mapping[str, Any], *, namespace: str, name: str
) -> str:
    """The import of the resource `uid`, created if it does not exist yet. Safe against a
    concurrent caller recording the same uid (the API, another replica)."""
    ref = parse_folder_url(str(spec["source"]["url"]))
    options = with_mode(import_options(spec, namespace, name), runtime.settings)
    with runtime.session() as session:
        return db.create_import(session, ref, options, external_id=uid).id


def ensure_import(
    runtime: Runtime,
    importer: Importer,
    uid: str,
    spec: Mapping[str, Any],
    credentials: Mapping[str, str] | None = None,
    *,
    namespace: str,
    name: str,
) -> str:
    """Record the resource's import (once) and make sure its folder is being listed.

    `credentials` are the values of the Secret the spec names (Settings field -> value), read
    by the caller; without them the runtime reads the Secret itself when it opens the source.
    Raises InvalidSourceURL / SpecError for a spec that can never work."""
    if import_id_for(runtime, uid) is None:
        # Checked before it is first recorded only: an import that runs or ran stays its
        # resource's whatever was decided since (a newer operator's rules, other settings).
        check_spec(spec, runtime.settings)
    ref = SecretRef.from_spec(spec, namespace)
    if ref is not None:
        if not isinstance(runtime, CredentialedRuntime):
            raise TypeError("credentialsSecretRef needs a CredentialedRuntime to read Secrets")
        if credentials:
            runtime.remember(ref, credentials)
    import_id = record_import(runtime, uid, spec, namespace=namespace, name=name)
    with runtime.session() as session:
        # Listing from here on, so the status written right after says so; planning accepts
        # an import that is already listing, which is also how an interrupted listing resumes.
        db.advance_import(session, import_id, "listing")
    # Does nothing for an import already importing or finished, and nothing twice for one
    # this process is listing already.
    importer.plan_in_background(import_id)
    return import_id


def import_id_for(runtime: Runtime, uid: str) -> str | None:
    with runtime.session() as session:
        return db.import_id_for(session, uid)
