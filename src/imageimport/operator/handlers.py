"""The Kopf handlers of the ImageImport operator: thin, idempotent wrappers around
`imageimport.operator.logic` and `imageimport.services.imports`.

- create / resume: record the import under the resource's uid and have it listed; write status.
- a timer every few seconds while the phase is not final: status from the database. Its `when`
  filter turns false once the phase is final, so Kopf stops it for that resource.
- a slow timer while the phase is final: an import moves on from a final state only when its
  failed files are retried (POST /api/v1/imports/{id}/retry); it then writes the new phase,
  which starts the first timer again. These timers share one read of every import's phase.
- a sync timer for resources with `spec.sync` that is not suspended: starts the sync round
  that is due (`logic.sync_if_due`), which moves the phase back to Listing.
- an update of `spec.sync` (the rest of the spec is immutable): status.sync says so at once.
- delete (with the finalizer `imageimport.dev/finalizer`): cancel what is outstanding, delete
  the images when spec.options.deleteImagesOnRemoval.

Handlers write `status` through `patch.status` rather than by returning values: Kopf would put
a returned value under `status.<handler id>`, which the CRD's schema prunes. Kopf keeps its own
bookkeeping in `imageimport.dev/…` annotations for the same reason.

Handlers are synchronous (Kopf runs them in a thread pool): everything they call blocks on the
database.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from imageimport.errors import ConfigError, ImageImportError, InvalidSourceURL, TransientError
from imageimport.kube.cluster import GROUP, PLURAL, VERSION
from imageimport.operator import logic
from imageimport.services.credentials import CredentialedRuntime, SecretRef
from imageimport.services.imports import Importer, ensure_import, import_id_for
from imageimport.services.options import SpecError

FINALIZER = "imageimport.dev/finalizer"
ANNOTATIONS_PREFIX = "imageimport.dev"
PROGRESS_SECONDS = 3.0
RESYNC_SECONDS = 30.0
SYNC_SECONDS = 15.0  # how often a resource with spec.sync is checked for a round that is due
SECRET_RETRY_SECONDS = 15.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class OperatorContext:
    """What the handlers share, handed to Kopf as `memo.context`."""

    runtime: CredentialedRuntime
    importer: Importer
    resync_seconds: float = RESYNC_SECONDS
    clock: Callable[[], datetime] = _utc_now  # "now" for status and schedules (tests move it)
    _phases: dict[str, str] = field(default_factory=dict, init=False)
    _phases_read_at: float = field(default=-math.inf, init=False)
    _phases_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def phase_of(self, import_id: str) -> str | None:
        """The import's phase as the database had it at most half a resync interval ago:
        every finished resource's timer asks, one query answers them all."""
        with self._phases_lock:
            if time.monotonic() - self._phases_read_at >= self.resync_seconds / 2:
                self._phases = logic.resource_phases(self.runtime)
                self._phases_read_at = time.monotonic()
            return self._phases.get(import_id)


def make_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # The namespaces are given explicitly: no listing of namespaces or CRDs (less RBAC).
    settings.scanning.disabled = True
    return settings


def make_registry(
    progress_seconds: float = PROGRESS_SECONDS,
    resync_seconds: float = RESYNC_SECONDS,
    sync_seconds: float = SYNC_SECONDS,
    login: Callable[..., Any] = kopf.login_via_client,
) -> kopf.OperatorRegistry:
    """A registry with every handler. The default login is Kopf's own: the pod's service
    account inside a cluster, the kubeconfig outside one."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(id="login", registry=registry)(login)
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.create(*resource, id="start", registry=registry)(start)
    kopf.on.resume(*resource, id="resume", registry=registry)(start)
    kopf.timer(
        *resource,
        id="progress",
        interval=progress_seconds,
        initial_delay=progress_seconds,
        when=in_progress,
        registry=registry,
    )(progress)
    kopf.timer(
        *resource,
        id="resync",
        interval=resync_seconds,
        initial_delay=resync_seconds,
        when=finished_import,
        registry=registry,
    )(resync)
    kopf.timer(
        *resource,
        id="sync",
        interval=sync_seconds,
        initial_delay=sync_seconds,
        when=scheduled_sync,
        registry=registry,
    )(sync)
    kopf.on.update(*resource, id="sync-spec", field="spec.sync", registry=registry)(progress)
    kopf.on.delete(*resource, id="remove", registry=registry)(remove)
    return registry


def in_progress(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") not in logic.TERMINAL_PHASES


def finished_import(status: Mapping[str, Any], **_: Any) -> bool:
    """Final, with an import behind it (a rejected spec has none: nothing can reopen it)."""
    return status.get("phase") in logic.TERMINAL_PHASES and bool(status.get("importId"))


def scheduled_sync(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """spec.sync, not suspended, with an import behind it."""
    sync = spec.get("sync") or {}
    return bool(sync) and not sync.get("suspend") and bool(status.get("importId"))


# -- handlers ------------------------------------------------------------------------------------


def start(
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    uid: str,
    name: str,
    namespace: str | None,
    body: Any,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    if namespace is None:  # kopf's signature covers cluster-scoped resources too; ours are not
        raise kopf.PermanentError("An ImageImport is a namespaced resource.")
    context: OperatorContext = memo.context
    generation = meta.get("generation")
    previous = status.get("conditions")
    try:
        credentials = _read_credentials(context, spec, namespace)
        import_id = ensure_import(
            context.runtime,
            context.importer,
            uid,
            spec,
            credentials,
            namespace=namespace,
            name=name,
        )
    except (InvalidSourceURL, SpecError) as error:
        # Permanent: a new spec means a new resource.
        _write(patch, status, logic.rejected_status(str(error), generation, previous))
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        return
    except _SecretNotReady as error:
        _write(patch, status, logic.waiting_status(str(error), generation, previous))
        kopf.warn(body, reason="WaitingForSecret", message=str(error))
        raise kopf.TemporaryError(str(error), delay=SECRET_RETRY_SECONDS) from error
    new = logic.status_for(
        context.runtime, import_id, generation, previous, context.clock(), spec.get("sync")
    )
    _write(patch, status, new)
    if status.get("importId") != import_id:
        url = spec["source"]["url"]
        kopf.info(body, reason="Listing", message=f"Listing {url} as import {import_id}.")
    _announce(body, status, new)


def progress(
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    uid: str,
    body: Any,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    context: OperatorContext = memo.context
    import_id = status.get("importId") or import_id_for(context.runtime, uid)
    if import_id is None:
        return  # the start handler has not recorded it yet (e.g. it waits for a Secret)
    new = logic.status_for(
        context.runtime,
        import_id,
        meta.get("generation"),
        status.get("conditions"),
        context.clock(),
        spec.get("sync"),
    )
    _write(patch, status, new)
    _announce(body, status, new)


def resync(status: Mapping[str, Any], memo: Any, **kwargs: Any) -> None:
    """A final phase the database no longer has: write the status as the progress timer does."""
    if memo.context.phase_of(status["importId"]) != status.get("phase"):
        progress(status=status, memo=memo, **kwargs)


def sync(
    spec: Mapping[str, Any], status: Mapping[str, Any], body: Any, memo: Any, **kwargs: Any
) -> None:
    """A sync round when spec.sync wants one; the status then shows it listing."""
    context: OperatorContext = memo.context
    round_ = logic.sync_if_due(
        context.runtime, context.importer, status["importId"], spec["sync"], context.clock()
    )
    if round_ is not None:
        progress(spec=spec, status=status, body=body, memo=memo, **kwargs)


def remove(spec: Mapping[str, Any], uid: str, body: Any, memo: Any, **_: Any) -> None:
    context: OperatorContext = memo.context
    delete_images = bool((spec.get("options") or {}).get("deleteImagesOnRemoval"))
    removal = logic.finalize(context.runtime, context.importer, uid, delete_images)
    if removal is None:
        return
    what = "cancelled its outstanding files" if removal.cancelled else "it had already finished"
    message = f"Import {removal.import_id}: {what}"
    if delete_images:
        message += f"; deleted {removal.images_deleted} images no other import found"
    kopf.info(body, reason="Removed", message=message + ".")


# -- helpers -----------------------------------------------------------------------------------


class _SecretNotReady(ImageImportError):
    pass


def _read_credentials(
    context: OperatorContext, spec: Mapping[str, Any], namespace: str
) -> dict[str, str] | None:
    ref = SecretRef.from_spec(spec, namespace)
    if ref is None:
        return None
    try:
        return context.runtime.credentials_for(ref)
    except (ConfigError, TransientError) as error:
        # The Secret may be created after the resource (kubectl apply -f dir/), or be fixed.
        raise _SecretNotReady(f"Waiting for credentials: {error}") from error


def _write(patch: kopf.Patch, current: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Only what changed, and remove what no longer applies (e.g. completedAt after a retry,
    status.sync.nextSyncTime once suspended): a status patch is a JSON merge patch."""
    for key, value in new.items():
        if current.get(key) != value:
            patch.status[key] = _merge_patch(current.get(key), value)
    for key in ("startedAt", "completedAt", "importId", "sync"):
        if key in current and key not in new:
            patch.status[key] = None


def _merge_patch(current: Any, new: Any) -> Any:
    """`new` as a merge patch over `current`: keys that went away become None."""
    if not (isinstance(current, Mapping) and isinstance(new, Mapping)):
        return new
    gone = {key: None for key in current if key not in new}
    return {**gone, **{key: _merge_patch(current.get(key), value) for key, value in new.items()}}


def _announce(body: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """One Kubernetes Event per milestone: the phase recorded on the resource is what was
    announced last, which survives operator restarts."""
    phase = new["phase"]
    if old.get("phase") == phase:
        return
    message = new["message"]
    round_ = new.get("sync", {}).get("lastSyncRound")
    if old.get("phase") in logic.TERMINAL_PHASES and phase not in logic.TERMINAL_PHASES:
        if round_ != old.get("sync", {}).get("lastSyncRound"):
            reason, what = "Syncing", f"Sync round {round_}: the folder is listed again. "
        else:
            reason, what = "Retrying", "Failed files are tried again. "
        kopf.info(body, reason=reason, message=what + message)
    elif phase == "Importing":
        kopf.info(body, reason="Importing", message="The folder is listed. " + message)
    elif phase == "Succeeded":
        kopf.info(body, reason="Succeeded", message=message)
    elif phase in ("CompletedWithFailures", "Failed", "Cancelled"):
        kopf.warn(body, reason=phase, message=message)
