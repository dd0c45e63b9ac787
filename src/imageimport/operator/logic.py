"""What the operator does for an ImageImport, as plain functions (no Kopf, no Kubernetes
calls), so it can be tested against a database and a queue alone.

- Recording the import under the resource's uid and having it listed is
  `imageimport.services.imports.ensure_import`, which the API's Kubernetes mode shares.
- `status_for` is the resource's `status`, derived from the database every time.
- `sync_if_due` starts the sync round `spec.sync` asks for, when it is due (see `schedule`).
- `finalize` runs when the resource is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imageimport import db
from imageimport.errors import SyncRefused
from imageimport.operator.schedule import SyncSpec, SyncSpecError, next_sync_time
from imageimport.runtime import Runtime
from imageimport.services import images
from imageimport.services.imports import Importer, import_id_for

PHASES = {
    "pending": "Pending",
    "listing": "Listing",
    "importing": "Importing",
    "succeeded": "Succeeded",
    "completed_with_failures": "CompletedWithFailures",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
TERMINAL_PHASES = frozenset({"Succeeded", "CompletedWithFailures", "Failed", "Cancelled"})
CONDITION_TYPES = ("Ready", "Listing", "Importing")


# -- status ------------------------------------------------------------------------------------


def resource_phases(runtime: Runtime) -> dict[str, str]:
    """The phase of every import recorded for a resource, by import id: one query serves the
    checks of every finished resource at once."""
    with runtime.session() as session:
        states = db.states_of_external_imports(session)
    return {import_id: PHASES[state] for import_id, state in states.items()}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_for(
    runtime: Runtime,
    import_id: str,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
    sync: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The resource's status for the import as the database has it now. Conditions keep
    their lastTransitionTime unless their status changes. `status.sync` says how the last
    sync round went (whatever started it) and, with the resource's `spec.sync`, when the next
    one is."""
    now = now or datetime.now(UTC)
    with runtime.session() as session:
        record = db.get_import(session, import_id)
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        counters = db.import_counters(session, import_id)
        last_sync = db.last_sync(session, import_id)
        state, error = record.state, record.error
        started_at, finished_at = record.started_at, record.finished_at
        created_at = record.created_at
    phase = PHASES[state]
    message = _message(phase, import_id, error, counters)
    status: dict[str, Any] = {
        "phase": phase,
        "importId": import_id,
        "counters": {
            "discovered": counters.discovered,
            "imported": counters.imported,
            "duplicates": counters.duplicates,
            "unchanged": counters.unchanged,
            "skipped": counters.skipped,
            "failed": counters.failed,
            "gone": counters.gone,
        },
        "bytes": counters.bytes,
        "message": message,
        "conditions": _conditions(
            _desired_conditions(phase, message, counters),
            previous_conditions,
            generation,
            now,
        ),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if started_at is not None:
        status["startedAt"] = rfc3339(started_at)
    if finished_at is not None:
        status["completedAt"] = rfc3339(finished_at)
    if sync is not None or last_sync is not None:
        status["sync"] = _sync_status(sync, last_sync, created_at, now)
    return status


def _sync_status(
    sync: Mapping[str, Any] | None, last: db.SyncRound | None, created_at: datetime, now: datetime
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if last is not None:
        status["lastSyncTime"] = rfc3339(last.started_at)
        status["lastSyncRound"] = last.round
        status["lastSyncResult"] = {
            "added": last.added,
            "changed": last.changed,
            "unchanged": last.unchanged,
            "gone": last.gone,
            "pruned": last.pruned,
        }
    if sync is None:
        return status  # rounds started through the API, CLI or page only
    status["suspended"] = bool(sync.get("suspend", False))
    try:
        spec = SyncSpec.from_spec(sync)
    except SyncSpecError as error:
        status["error"] = str(error)
        return status
    if not spec.suspend:
        since = last.started_at if last is not None else created_at
        status["nextSyncTime"] = rfc3339(next_sync_time(spec, since, now))
    return status


def sync_if_due(
    runtime: Runtime, importer: Importer, import_id: str, sync: Mapping[str, Any], now: datetime
) -> int | None:
    """Start the sync round the resource's `spec.sync` asks for, if one is due by `now` and
    the import has finished; the round's number. A round due while the import (or a round)
    still runs is started by the first call after it ends: one round at a time, and fire
    times missed meanwhile make one round."""
    try:
        spec = SyncSpec.from_spec(sync)
    except SyncSpecError:
        return None  # status.sync.error says why
    if spec.suspend:
        return None
    with runtime.session() as session:
        record = db.get_import(session, import_id)
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        last = db.last_sync(session, import_id)
        finished = PHASES[record.state] in TERMINAL_PHASES
        since = last.started_at if last is not None else record.created_at
    if not finished or next_sync_time(spec, since, now) > now:
        return None
    try:
        return importer.sync(import_id, prune=spec.prune, trigger="schedule")
    except SyncRefused:
        return None  # a round started meanwhile (through the API), or the listing has not returned


def rejected_status(
    message: str,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status of a resource whose spec can never be imported (nothing is recorded)."""
    desired = [
        ("Ready", "False", "InvalidSpec", message),
        ("Listing", "False", "InvalidSpec", "The folder is not listed."),
        ("Importing", "False", "InvalidSpec", "Nothing is imported."),
    ]
    return _unrecorded_status("Failed", message, desired, generation, previous_conditions, now)


def waiting_status(
    message: str,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Pending on something that may appear later (e.g. the credentials Secret)."""
    desired = [
        ("Ready", "False", "Waiting", message),
        ("Listing", "False", "NotStarted", "The folder is not listed yet."),
        ("Importing", "False", "NotStarted", "Nothing is imported yet."),
    ]
    return _unrecorded_status("Pending", message, desired, generation, previous_conditions, now)


def _unrecorded_status(
    phase: str,
    message: str,
    desired: list[tuple[str, str, str, str]],
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None,
    now: datetime | None,
) -> dict[str, Any]:
    """The status of a resource with no import behind it (yet)."""
    status: dict[str, Any] = {
        "phase": phase,
        "message": message,
        "conditions": _conditions(desired, previous_conditions, generation, now),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def _message(phase: str, import_id: str, error: str | None, c: db.Counters) -> str:
    unchanged = f"{c.unchanged} unchanged, " if c.unchanged else ""
    tally = (
        f"{c.imported} imported, {unchanged}{c.duplicates} already stored, "
        f"{c.skipped} not images, {c.failed} failed"
    )
    if phase == "Pending":
        return "Waiting for the folder to be listed."
    if phase == "Listing":
        return f"Listing the folder: {c.discovered} files found so far, {c.finished} processed."
    if phase == "Importing":
        return f"Importing: {c.finished} of {c.discovered} files processed ({tally})."
    if phase == "Succeeded":
        return f"Imported all {c.discovered} files ({tally})."
    if phase == "CompletedWithFailures":
        return (
            f"Finished, but {c.failed} of {c.discovered} files failed ({tally}); "
            f"GET /api/v1/imports/{import_id}/items?state=failed lists why."
        )
    if phase == "Failed":
        return f"Failed: {error}" if error else "Failed."
    return (
        f"Cancelled after {c.finished - c.cancelled} of {c.discovered} files "
        f"({tally}, {c.cancelled} cancelled)."
    )


def _desired_conditions(
    phase: str, message: str, c: db.Counters
) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) for each condition type."""
    if phase in ("Succeeded", "CompletedWithFailures"):
        ready = ("True", phase)
    elif phase in ("Failed", "Cancelled"):
        ready = ("False", phase)
    else:
        ready = ("False", "InProgress")

    listing_reason = {
        "Pending": "NotStarted",
        "Listing": "Listing",
        "Failed": "Failed",
        "Cancelled": "Cancelled",
    }.get(phase, "Listed")
    if phase == "Listing":
        listing_message = f"{c.discovered} files found so far."
    elif listing_reason == "Listed":
        listing_message = f"The folder was listed: {c.discovered} files."
    else:
        listing_message = "The folder is not being listed."

    # Workers start on the first page of a listing, so importing overlaps listing.
    importing = phase == "Importing" or (phase == "Listing" and c.discovered > 0)
    importing_reason = (
        "Importing"
        if importing
        else {
            "Pending": "NotStarted",
            "Listing": "NotStarted",
            "Succeeded": "Finished",
            "CompletedWithFailures": "Finished",
        }.get(phase, phase)
    )
    importing_message = f"{c.finished} of {c.discovered} files processed."
    return [
        ("Ready", ready[0], ready[1], message),
        ("Listing", "True" if phase == "Listing" else "False", listing_reason, listing_message),
        ("Importing", "True" if importing else "False", importing_reason, importing_message),
    ]


def _conditions(
    desired: Sequence[tuple[str, str, str, str]],
    previous: Sequence[Mapping[str, Any]] | None,
    generation: int | None,
    now: datetime | None,
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or ()}
    stamp = rfc3339(now or datetime.now(UTC))
    conditions = []
    for type_, status, reason, message in desired:
        old = before.get(type_)
        unchanged = old is not None and old.get("status") == status
        since = old["lastTransitionTime"] if old is not None and unchanged else stamp
        condition: dict[str, Any] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    return conditions


# -- removal ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    import_id: str
    cancelled: bool  # False when the import had already finished
    images_deleted: int


def finalize(runtime: Runtime, importer: Importer, uid: str, delete_images: bool) -> Removal | None:
    """The resource is going away: cancel what is outstanding and, when asked, delete the
    images this import found that no other import also found (rows and objects); the others
    stay but stop counting as this import's. The import's row and its items stay (the REST
    API keeps the history). None when no import was ever recorded."""
    import_id = import_id_for(runtime, uid)
    if import_id is None:
        return None
    cancelled = importer.cancel(import_id)  # a listing still running stops at its next page
    deleted = 0
    if delete_images:
        deleted = images.delete_images(
            runtime, db.found_only_by(import_id), release_import=import_id
        )
    runtime.forget_source(import_id)
    return Removal(import_id, cancelled, deleted)
