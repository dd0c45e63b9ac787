"""What the operator does for an ImageImport, as plain functions (no Kopf, no Kubernetes
calls), so it can be tested against a database and a queue alone.

- `ensure_import` records the import under the resource's uid (`imports.external_id`) and has
  it listed. It is idempotent: a restarted operator, a second replica or the API recording the
  same uid all end up with one import row, and planning publishes each file once (items are
  unique per file, messages carry a de-duplication id). An import still `listing` after a
  restart is listed again from the start, which publishes nothing twice.
- `status_for` is the resource's `status`, derived from the database every time.
- `finalize` runs when the resource is deleted.

Source credentials (spec.source.credentialsSecretRef): the handler reads the Secret and passes
its values in; they are kept in memory only, and the import's options record just the Secret's
name (see `imageimport.services.credentials`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from imageimport.db import repo
from imageimport.db.models import Image, Import, ImportItem
from imageimport.errors import ImageImportError
from imageimport.runtime import Runtime
from imageimport.services.credentials import OPTION, CredentialedRuntime, SecretRef
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from imageimport.sources.base import parse_folder_url

log = logging.getLogger(__name__)

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
# spec.options the pipeline honours as the CRD describes them (concurrency is only a hint).
KNOWN_OPTIONS = (
    "recursive",
    "maxFileSizeBytes",
    "includeNonImages",
    "concurrency",
    "deleteImagesOnRemoval",
)


class SpecError(ImageImportError):
    """The resource asks for something this installation cannot do; the sentence says what."""


# -- recording and listing ----------------------------------------------------------------


def check_spec(spec: Mapping[str, Any], settings: Settings) -> None:
    """InvalidSourceURL or SpecError, with a sentence for status.message, when the spec asks
    for something the workers would not do (they use the installation's settings)."""
    parse_folder_url(str((spec.get("source") or {}).get("url", "")))
    destination = spec.get("destination") or {}
    bucket = destination.get("bucket")
    if bucket and bucket != settings.s3_bucket:
        where = f"the bucket {settings.s3_bucket!r}" if settings.s3_bucket else "a local folder"
        raise SpecError(
            f"spec.destination.bucket is {bucket!r}, but this installation stores images in "
            f"{where}; leave the field out (per-import buckets are not supported)."
        )
    prefix = destination.get("prefix")
    if prefix is not None and prefix.strip("/") != settings.s3_prefix.strip("/"):
        raise SpecError(
            f"spec.destination.prefix is {prefix!r}, but this installation stores images under "
            f"{settings.s3_prefix!r}; leave the field out (per-import prefixes are not supported)."
        )
    options = spec.get("options") or {}
    if options.get("recursive") is False:
        raise SpecError(
            "spec.options.recursive is false, but imports always include the subfolders; "
            "share only the folder you want, or leave the option out."
        )
    if options.get("includeNonImages") is True:
        raise SpecError(
            "spec.options.includeNonImages is true, but only images are stored; "
            "leave the option out."
        )
    size = options.get("maxFileSizeBytes")
    if size is not None and int(size) != settings.max_file_size_bytes:
        raise SpecError(
            f"spec.options.maxFileSizeBytes is {size}, but this installation's limit is "
            f"{settings.max_file_size_bytes} bytes (MAX_FILE_SIZE_BYTES) for every import; "
            "leave the option out."
        )


def import_options(spec: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """What `imports.options` records: the resource, its options, the Secret's name only."""
    options: dict[str, Any] = {
        key: value for key, value in (spec.get("options") or {}).items() if key in KNOWN_OPTIONS
    }
    options["resource"] = {"namespace": namespace, "name": name}
    ref = SecretRef.from_spec(spec, namespace)
    if ref is not None:
        options[OPTION] = ref.to_options()
    return options


def record_import(
    runtime: Runtime, uid: str, spec: Mapping[str, Any], *, namespace: str, name: str
) -> str:
    """The import of the resource `uid`, created if it does not exist yet. Safe against a
    concurrent caller recording the same uid (the API, another replica)."""
    ref = parse_folder_url(str(spec["source"]["url"]))
    options = import_options(spec, namespace, name)
    try:
        with runtime.session() as session:
            return repo.create_import(session, ref, options, external_id=uid).id
    except IntegrityError:
        # Someone else inserted the same external_id between our look-up and our insert.
        with runtime.session() as session:
            return repo.create_import(session, ref, options, external_id=uid).id


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
        repo.advance_import(session, import_id, "listing")
    # Does nothing for an import already importing or finished, and nothing twice for one
    # this process is listing already.
    importer.plan_in_background(import_id)
    return import_id


def import_id_for(runtime: Runtime, uid: str) -> str | None:
    with runtime.session() as session:
        return session.scalar(select(Import.id).where(Import.external_id == uid))


# -- status ------------------------------------------------------------------------------------


def resource_phases(runtime: Runtime) -> dict[str, str]:
    """The phase of every import recorded for a resource, by import id: one query serves the
    checks of every finished resource at once."""
    with runtime.session() as session:
        rows = session.execute(
            select(Import.id, Import.state).where(Import.external_id.is_not(None))
        )
        return {import_id: PHASES[state] for import_id, state in rows}


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC datetimes
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_for(
    runtime: Runtime,
    import_id: str,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The resource's status for the import as the database has it now. Conditions keep
    their lastTransitionTime unless their status changes."""
    with runtime.session() as session:
        record = session.get(Import, import_id)
        if record is None:
            raise LookupError(f"import {import_id} does not exist")
        counters = repo.import_counters(session, import_id)
        state, error = record.state, record.error
        started_at, finished_at = record.started_at, record.finished_at
    phase = PHASES[state]
    message = _message(phase, import_id, error, counters)
    status: dict[str, Any] = {
        "phase": phase,
        "importId": import_id,
        "counters": {
            "discovered": counters.discovered,
            "imported": counters.imported,
            "duplicates": counters.duplicates,
            "skipped": counters.skipped,
            "failed": counters.failed,
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
    return status


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


def _message(phase: str, import_id: str, error: str | None, c: repo.Counters) -> str:
    tally = (
        f"{c.imported} imported, {c.duplicates} already stored, {c.skipped} not images, "
        f"{c.failed} failed"
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
    phase: str, message: str, c: repo.Counters
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
        condition: dict[str, Any] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": old["lastTransitionTime"] if unchanged else stamp,  # type: ignore[index]
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
    deleted = _delete_images(runtime, import_id) if delete_images else 0
    runtime.forget_source(import_id)
    return Removal(import_id, cancelled, deleted)


def _delete_images(runtime: Runtime, import_id: str) -> int:
    with runtime.session() as session:
        found_here = select(ImportItem.image_id).where(
            ImportItem.import_id == import_id, ImportItem.image_id.is_not(None)
        )
        found_elsewhere = select(ImportItem.image_id).where(
            ImportItem.import_id != import_id, ImportItem.image_id.is_not(None)
        )
        images = list(
            session.scalars(
                select(Image).where(
                    or_(Image.id.in_(found_here), Image.import_id == import_id),
                    Image.id.not_in(found_elsewhere),
                )
            )
        )
        keys = [key for image in images for key in (image.object_key, image.thumbnail_key)]
        for image in images:
            session.delete(image)  # items that pointed at it keep their row (image_id NULL)
        # The images another import also found stay, but no longer count as this import's:
        # when that other import is removed with its images, they go too.
        session.execute(
            update(ImportItem)
            .where(ImportItem.import_id == import_id, ImportItem.image_id.is_not(None))
            .values(image_id=None)
            .execution_options(synchronize_session=False)
        )
    # Rows first: if deleting an object fails, what is left is an unreferenced object, never
    # a row that points at nothing.
    for key in keys:
        try:
            runtime.store.delete(key)
        except Exception:
            log.warning("could not delete object %s of import %s", key, import_id, exc_info=True)
    return len(images)
