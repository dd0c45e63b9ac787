"""The operator's logic without Kubernetes: real PostgreSQL, real NATS JetStream, the fake
Drive, and worker pools in this process."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from imageimport import db
from imageimport.db.models import Image, Import, ImportItem
from imageimport.errors import InvalidSourceURL
from imageimport.operator import logic
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.base import Job
from imageimport.queue.nats import NatsQueue
from imageimport.services.credentials import CredentialedRuntime, SecretRef
from imageimport.services.imports import Importer, ensure_import, record_import
from imageimport.services.options import SpecError, check_spec, import_options
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.registry import parse_folder_url
from tests.distributed.cluster import purge_stream, stream_last_sequence
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image
from tests.pipeline.routes import API_KEY, start_route

pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(120)]

NAMESPACE = "photos"
IMG = [make_image(30 + i, 20, "PNG", seed=500 + i) for i in range(4)]
FOLDER_A = FakeFolder("A", [FakeFile("one.png", IMG[0]), FakeFile("two.png", IMG[1])])
FOLDER_B = FakeFolder("B", [FakeFile("two again.png", IMG[1]), FakeFile("three.png", IMG[2])])
BIG = big_folder(450, seed=51, name="logic-big")  # three listing pages of 200
SECRET_FOLDER = FakeFolder("C", [FakeFile("four.png", IMG[3])])


class Secrets:
    """Secrets by (namespace, name), as the Kubernetes API would hand them out (base64)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        self.reads = 0

    def put(self, namespace: str, name: str, values: Mapping[str, str]) -> None:
        self.data[namespace, name] = {
            key: base64.b64encode(value.encode()).decode() for key, value in values.items()
        }

    def __call__(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.reads += 1
        return self.data.get((namespace, name))


class World:
    def __init__(self, settings: Settings, nats_url: str, secrets: Secrets) -> None:
        self.settings = settings
        self.nats_url = nats_url
        self.secrets = secrets
        self._exits = ExitStack()

    def runtime(self, **overrides: Any) -> CredentialedRuntime:
        runtime = CredentialedRuntime(
            self.settings.model_copy(update=overrides), reader=self.secrets
        )
        self._exits.callback(runtime.close)
        return runtime

    def queue(self) -> NatsQueue:
        queue = NatsQueue(self.nats_url, self.settings.max_deliver)
        self._exits.callback(queue.close)
        return queue

    def importer(self, runtime: CredentialedRuntime) -> Importer:
        importer = Importer(runtime, self.queue())
        self._exits.callback(importer.wait, 30)
        return importer

    def workers(self, runtime: CredentialedRuntime) -> WorkerPool:
        pool = WorkerPool(runtime, self.queue(), 4)
        pool.start()
        self._exits.callback(pool.stop)
        return pool

    def close(self) -> None:
        self._exits.close()


@pytest.fixture
def drive() -> Iterator[Any]:
    root = FakeFolder("root", [FOLDER_A, FOLDER_B, BIG, SECRET_FOLDER])
    with start_route("gdrive-api", root) as route:
        yield route


@pytest.fixture
def world(
    postgres_database: str,
    nats_server: Any,
    drive: Any,
    make_settings: Callable[..., Settings],
) -> Iterator[World]:
    purge_stream(nats_server.url)
    settings = make_settings(
        database_url=postgres_database, nats_url=nats_server.url, **drive.settings
    )
    made = World(settings, nats_server.url, Secrets())
    yield made
    made.close()


def url(folder: FakeFolder) -> str:
    return f"https://drive.google.com/drive/folders/{folder.id}"


def spec(folder: FakeFolder, **extra: Any) -> dict[str, Any]:
    return {"source": {"url": url(folder)}, **extra}


def rows(runtime: CredentialedRuntime) -> list[tuple[str, str | None, str]]:
    with runtime.session() as session:
        return [
            (r.id, r.external_id, r.state)
            for r in session.scalars(select(Import).order_by(Import.created_at))
        ]


def counts(runtime: CredentialedRuntime, import_id: str) -> dict[str, int]:
    with runtime.session() as session:
        c = db.import_counters(session, import_id)
    return {"discovered": c.discovered, "pending": c.pending, "done": c.imported}


# -- recording and listing -----------------------------------------------------------------


def test_ensure_import_is_idempotent_across_restarts_and_replicas(world: World) -> None:
    runtime = world.runtime()
    first = world.importer(runtime)
    import_id = ensure_import(runtime, first, "uid-1", spec(BIG), namespace=NAMESPACE, name="big")
    first.wait(60)
    assert counts(runtime, import_id) == {"discovered": 450, "pending": 450, "done": 0}
    assert stream_last_sequence(world.nats_url) == 450

    # The same resource seen again: by this operator, by a restarted one, by a second replica.
    again = ensure_import(runtime, first, "uid-1", spec(BIG), namespace=NAMESPACE, name="big")
    replica_runtime = world.runtime()
    replica = world.importer(replica_runtime)
    other = ensure_import(
        replica_runtime, replica, "uid-1", spec(BIG), namespace=NAMESPACE, name="big"
    )
    first.wait(60)
    replica.wait(60)
    assert again == other == import_id
    assert rows(runtime) == [(import_id, "uid-1", "importing")]
    assert stream_last_sequence(world.nats_url) == 450
    with runtime.session() as session:
        record = session.get(Import, import_id)
        assert record is not None
        assert record.options == {"resource": {"namespace": NAMESPACE, "name": "big"}}


def test_a_listing_cut_short_is_listed_again_without_publishing_twice(world: World) -> None:
    runtime = world.runtime()
    # What a killed operator leaves: the import recorded, listing, its first page published.
    import_id = record_import(runtime, "uid-2", spec(BIG), namespace=NAMESPACE, name="big")
    with runtime.session() as session:
        assert db.advance_import(session, import_id, "listing")
    first_page = [
        RemoteFile(id=f.id, name=f.name, path=p, size=f.length, mime_type=f.mime_type)
        for p, f in BIG.files()[:200]
    ]
    with runtime.session() as session:
        items = db.add_items(session, import_id, first_page)
        jobs = [Job(import_id, item.id, item.remote_id) for item in items]
    world.queue().publish(jobs)
    assert stream_last_sequence(world.nats_url) == 200

    restarted = world.importer(world.runtime())
    assert (
        ensure_import(
            restarted.runtime, restarted, "uid-2", spec(BIG), namespace=NAMESPACE, name="big"
        )
        == import_id
    )
    restarted.wait(60)
    assert rows(runtime) == [(import_id, "uid-2", "importing")]
    assert counts(runtime, import_id)["discovered"] == 450
    assert stream_last_sequence(world.nats_url) == 450


def test_an_import_recorded_by_the_api_first_is_the_one_the_operator_lists(world: World) -> None:
    runtime = world.runtime()
    recorded = record_import(runtime, "uid-3", spec(FOLDER_A), namespace=NAMESPACE, name="a")
    importer = world.importer(runtime)
    listed = ensure_import(
        runtime, importer, "uid-3", spec(FOLDER_A), namespace=NAMESPACE, name="a"
    )
    importer.wait(30)
    assert listed == recorded
    assert rows(runtime) == [(recorded, "uid-3", "importing")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"destination": {"bucket": "elsewhere"}}, "spec.destination.bucket is 'elsewhere'"),
        ({"destination": {"prefix": "holidays/"}}, "spec.destination.prefix is 'holidays/'"),
        ({"options": {"recursive": False}}, "imports always include the subfolders"),
        ({"options": {"includeNonImages": True}}, "only images are stored"),
        ({"options": {"maxFileSizeBytes": 2**62}}, "this installation's limit is"),
        ({"options": {"maxFileSizeBytes": 0}}, "it must be a number of bytes from 1"),
        ({"options": {"deleteImagesOnRemoval": "yes"}}, "it must be true or false"),
        (
            {"options": {"speed": "max"}},
            r"Unknown field\(s\) spec.options.speed: an ImageImport supports spec.source.url, ",
        ),
    ],
)
def test_a_spec_the_workers_would_not_honour_is_refused(
    world: World, extra: dict[str, Any], message: str
) -> None:
    runtime = world.runtime()
    with pytest.raises(SpecError, match=message):
        ensure_import(
            runtime,
            world.importer(runtime),
            "uid-x",
            spec(FOLDER_A, **extra),
            namespace=NAMESPACE,
            name="x",
        )
    assert rows(runtime) == []


def test_what_the_installation_does_is_accepted_and_a_bad_link_is_refused(world: World) -> None:
    settings = world.settings.model_copy(update={"s3_bucket": "photos", "s3_prefix": "imports/"})
    check_spec(
        spec(
            FOLDER_A,
            destination={"bucket": "photos", "prefix": "imports"},
            options={
                "recursive": True,
                "includeNonImages": False,
                "maxFileSizeBytes": settings.max_file_size_bytes,
                "concurrency": 4,
                "deleteImagesOnRemoval": True,
            },
        ),
        settings,
    )
    check_spec(spec(FOLDER_A, options={"maxFileSizeBytes": 1000}), settings)  # a lower limit
    with pytest.raises(InvalidSourceURL):
        check_spec({"source": {"url": "https://example.com/folder"}}, settings)


def test_a_recorded_import_is_not_refused_by_settings_changed_since(world: World) -> None:
    """An operator restarted with a lower MAX_FILE_SIZE_BYTES keeps the import that runs or ran
    for a resource asking for more, instead of failing it; a new resource is refused."""
    runtime = world.runtime()
    asking = spec(FOLDER_A, options={"maxFileSizeBytes": 1000})
    recorded = record_import(runtime, "uid-old", asking, namespace=NAMESPACE, name="old")
    lowered = world.runtime(max_file_size_bytes=500)
    importer = world.importer(lowered)
    assert ensure_import(lowered, importer, "uid-old", asking, namespace=NAMESPACE, name="old") == (
        recorded
    )
    importer.wait(30)
    with pytest.raises(SpecError, match="maxFileSizeBytes is 1000, but this installation's limit"):
        ensure_import(lowered, importer, "uid-new", asking, namespace=NAMESPACE, name="new")


def test_the_import_records_the_options_the_workers_honour() -> None:
    options = import_options(
        spec(
            FOLDER_A,
            options={"maxFileSizeBytes": 1000, "deleteImagesOnRemoval": True, "recursive": True},
        ),
        NAMESPACE,
        "a",
    )
    assert options == {
        "maxFileSizeBytes": 1000,
        "deleteImagesOnRemoval": True,
        "resource": {"namespace": NAMESPACE, "name": "a"},
    }


def test_the_workers_apply_a_resources_lower_file_size_limit(world: World) -> None:
    runtime = world.runtime()
    world.workers(runtime)
    limit = 250  # between two.png (229 bytes) and one.png (268 bytes)
    assert len(IMG[1]) <= limit < len(IMG[0])
    importer = world.importer(runtime)
    limited = spec(FOLDER_A, options={"maxFileSizeBytes": limit})
    import_id = ensure_import(runtime, importer, "uid-l", limited, namespace=NAMESPACE, name="l")
    importer.wait(30)
    status = wait_finished(runtime, import_id)
    assert status["phase"] == "CompletedWithFailures", status
    with runtime.session() as session:
        items = {
            item.name: (item.state, item.reason)
            for item in session.scalars(select(ImportItem).where(ImportItem.import_id == import_id))
        }
    assert items == {
        "one.png": (
            "failed",
            "File too large: more than 250 bytes (the import's maxFileSizeBytes).",
        ),
        "two.png": ("done", None),
    }


# -- status ------------------------------------------------------------------------------------

T1 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T2 = datetime(2026, 1, 2, 3, 9, 0, tzinfo=UTC)


def _settle(runtime: CredentialedRuntime, import_id: str, states: list[str]) -> None:
    with runtime.session() as session:
        items = list(
            session.scalars(
                select(ImportItem)
                .where(ImportItem.import_id == import_id, ImportItem.state == "pending")
                .order_by(ImportItem.id)
            )
        )
        for item, state in zip(items, states, strict=False):
            db.finish_item(session, item.id, state, nbytes=100 if state != "failed" else None)


def test_status_follows_the_import_and_transition_times_move_only_on_change(
    world: World,
) -> None:
    runtime = world.runtime()
    import_id = record_import(runtime, "uid-4", spec(FOLDER_A), namespace=NAMESPACE, name="a")
    pending = logic.status_for(runtime, import_id, 1, None, now=T1)
    assert pending == {
        "phase": "Pending",
        "importId": import_id,
        "counters": {"discovered": 0, "imported": 0, "duplicates": 0, "unchanged": 0,
                     "skipped": 0, "failed": 0, "gone": 0},
        "bytes": 0,
        "message": "Waiting for the folder to be listed.",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "InProgress",
             "message": "Waiting for the folder to be listed.",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1},
            {"type": "Listing", "status": "False", "reason": "NotStarted",
             "message": "The folder is not being listed.",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1},
            {"type": "Importing", "status": "False", "reason": "NotStarted",
             "message": "0 of 0 files processed.",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1},
        ],
    }  # fmt: skip

    files = [RemoteFile(id=f"f{i}", name=f"{i}.png", path=f"{i}.png", size=100) for i in range(5)]
    with runtime.session() as session:
        db.advance_import(session, import_id, "listing")
        db.add_items(session, import_id, files)
        db.advance_import(session, import_id, "importing")
    _settle(runtime, import_id, ["done", "duplicate"])
    importing = logic.status_for(runtime, import_id, 1, pending["conditions"], now=T2)
    assert importing["phase"] == "Importing"
    assert importing["message"] == (
        "Importing: 2 of 5 files processed (1 imported, 1 already stored, 0 not images, 0 failed)."
    )
    assert importing["counters"] == {
        "discovered": 5, "imported": 1, "duplicates": 1, "unchanged": 0, "skipped": 0,
        "failed": 0, "gone": 0,
    }  # fmt: skip
    assert importing["bytes"] == 200
    assert "startedAt" in importing and "completedAt" not in importing
    by_type = {c["type"]: c for c in importing["conditions"]}
    # Ready and Listing are still False: their transition time stays; Importing turned True.
    assert by_type["Ready"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert by_type["Listing"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert by_type["Listing"]["reason"] == "Listed"
    assert (by_type["Importing"]["status"], by_type["Importing"]["lastTransitionTime"]) == (
        "True",
        "2026-01-02T03:09:00Z",
    )

    _settle(runtime, import_id, ["skipped", "failed", "done"])
    with runtime.session() as session:
        assert db.finish_if_complete(session, import_id) == "completed_with_failures"
    later = datetime(2026, 1, 2, 3, 20, tzinfo=UTC)
    final = logic.status_for(runtime, import_id, 1, importing["conditions"], now=later)
    assert final["phase"] == "CompletedWithFailures"
    assert final["message"] == (
        "Finished, but 1 of 5 files failed (2 imported, 1 already stored, 1 not images, "
        f"1 failed); GET /api/v1/imports/{import_id}/items?state=failed lists why."
    )
    assert final["completedAt"] >= final["startedAt"]
    assert [
        (c["type"], c["status"], c["reason"], c["lastTransitionTime"]) for c in final["conditions"]
    ] == [
        ("Ready", "True", "CompletedWithFailures", "2026-01-02T03:20:00Z"),
        ("Listing", "False", "Listed", "2026-01-02T03:04:05Z"),
        ("Importing", "False", "Finished", "2026-01-02T03:20:00Z"),
    ]


def test_resource_phases_are_read_for_every_resource_at_once(world: World) -> None:
    runtime = world.runtime()
    first = record_import(runtime, "uid-p1", spec(FOLDER_A), namespace=NAMESPACE, name="a")
    second = record_import(runtime, "uid-p2", spec(FOLDER_A), namespace=NAMESPACE, name="b")
    with runtime.session() as session:
        assert db.advance_import(session, second, "listing")
        # An import of the API's standalone mode has no resource: not read.
        db.create_import(session, parse_folder_url(url(FOLDER_A)), {})
    assert logic.resource_phases(runtime) == {first: "Pending", second: "Listing"}


def test_a_failed_listing_says_why(world: World) -> None:
    runtime = world.runtime()
    import_id = record_import(runtime, "uid-5", spec(FOLDER_A), namespace=NAMESPACE, name="a")
    with runtime.session() as session:
        db.advance_import(session, import_id, "listing")
        db.advance_import(session, import_id, "failed", error="The folder is not shared.")
    status = logic.status_for(runtime, import_id, 3)
    assert status["phase"] == "Failed"
    assert status["message"] == "Failed: The folder is not shared."
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "Ready": ("False", "Failed"),
        "Listing": ("False", "Failed"),
        "Importing": ("False", "Failed"),
    }
    assert status["observedGeneration"] == 3


# -- sync rounds on a schedule -------------------------------------------------------------------


def _finished_import(runtime: CredentialedRuntime, uid: str) -> tuple[str, datetime]:
    """An import of FOLDER_A that has ended, recorded with ids the folder does not have (as
    if its files had been replaced since); its id and creation time."""
    import_id = record_import(runtime, uid, spec(FOLDER_A), namespace=NAMESPACE, name="s")
    files = [RemoteFile(id=f"old{i}", name=f"{i}.png", path=f"{i}.png", size=100) for i in range(3)]
    with runtime.session() as session:
        db.advance_import(session, import_id, "listing")
        db.add_items(session, import_id, files)
        db.advance_import(session, import_id, "importing")
    _settle(runtime, import_id, ["done", "done", "done"])
    with runtime.session() as session:
        assert db.finish_if_complete(session, import_id) == "succeeded"
        record = db.get_import(session, import_id)
        assert record is not None
        return import_id, record.created_at


def _sync_status(runtime: CredentialedRuntime, import_id: str, sync: dict, now: datetime) -> Any:
    return logic.status_for(runtime, import_id, 1, now=now, sync=sync)["sync"]


def test_a_sync_round_starts_when_due_one_at_a_time(world: World) -> None:
    """No workers: a round's files stay pending, so it runs until the test settles them."""
    runtime = world.runtime()
    importer = world.importer(runtime)
    import_id, created = _finished_import(runtime, "uid-s1")
    hourly = {"interval": "1h", "prune": True}
    hour = timedelta(hours=1)

    # The first round is due an interval after the import was created.
    soon = created + timedelta(minutes=59)
    assert logic.sync_if_due(runtime, importer, import_id, hourly, soon) is None
    assert _sync_status(runtime, import_id, hourly, soon) == {
        "suspended": False,
        "nextSyncTime": logic.rfc3339(created + hour),
    }
    # Suspended: no round, however late, and no next time.
    late = created + timedelta(hours=5, minutes=30)
    suspended = {**hourly, "suspend": True}
    assert logic.sync_if_due(runtime, importer, import_id, suspended, late) is None
    assert _sync_status(runtime, import_id, suspended, late) == {"suspended": True}
    assert rows(runtime) == [(import_id, "uid-s1", "succeeded")]

    # Five fire times were missed: one round.
    assert logic.sync_if_due(runtime, importer, import_id, hourly, late) == 1
    # Due again by an hour later, but the round still runs: nothing starts.
    later = late + hour
    assert logic.sync_if_due(runtime, importer, import_id, hourly, later) is None
    importer.wait(30)
    with runtime.session() as session:
        first = db.last_sync(session, import_id)
    assert first is not None
    assert (first.round, first.trigger, first.prune) == (1, "schedule", True)
    status = logic.status_for(runtime, import_id, 1, now=later, sync=hourly)
    assert status["phase"] == "Importing"
    assert status["sync"] == {
        "suspended": False,
        "lastSyncTime": logic.rfc3339(first.started_at),
        "lastSyncRound": 1,
        "lastSyncResult": {"added": 2, "changed": 0, "unchanged": 0, "gone": 3, "pruned": 0},
        # The fire time missed last, due as soon as the round ends.
        "nextSyncTime": logic.rfc3339(first.started_at + (later - first.started_at) // hour * hour),
    }

    # The round ends: the one due meanwhile starts at once.
    _settle(runtime, import_id, ["done", "done"])
    with runtime.session() as session:
        assert db.finish_if_complete(session, import_id) == "succeeded"
    assert logic.sync_if_due(runtime, importer, import_id, hourly, later) == 2
    importer.wait(30)
    with runtime.session() as session:
        second = db.last_sync(session, import_id)
    assert second is not None and (second.round, second.trigger) == (2, "schedule")


def test_a_sync_spec_that_cannot_be_followed_is_reported_and_starts_nothing(
    world: World,
) -> None:
    runtime = world.runtime()
    importer = world.importer(runtime)
    import_id, created = _finished_import(runtime, "uid-s2")
    wrong = {"schedule": "0 25 * * *"}
    much_later = created + timedelta(days=30)
    assert logic.sync_if_due(runtime, importer, import_id, wrong, much_later) is None
    status = _sync_status(runtime, import_id, wrong, much_later)
    assert status["suspended"] is False and "nextSyncTime" not in status
    assert status["error"].startswith("spec.sync.schedule is '0 25 * * *', but it must be a cron")
    assert rows(runtime) == [(import_id, "uid-s2", "succeeded")]
    # Without spec.sync, no status.sync.
    assert "sync" not in logic.status_for(runtime, import_id, 1)


def test_a_round_started_through_the_api_shows_without_spec_sync(world: World) -> None:
    runtime = world.runtime()
    importer = world.importer(runtime)
    import_id, _ = _finished_import(runtime, "uid-s3")
    assert importer.sync(import_id, trigger="api") == 1
    importer.wait(30)
    with runtime.session() as session:
        round_ = db.last_sync(session, import_id)
    assert round_ is not None
    status = logic.status_for(runtime, import_id, 1)
    assert status["phase"] == "Importing"  # no workers: the two files it found wait
    assert status["sync"] == {
        "lastSyncTime": logic.rfc3339(round_.started_at),
        "lastSyncRound": 1,
        "lastSyncResult": {"added": 2, "changed": 0, "unchanged": 0, "gone": 3, "pruned": 0},
    }


# -- removal -----------------------------------------------------------------------------------


def test_finalize_cancels_what_is_outstanding(world: World) -> None:
    runtime = world.runtime()
    importer = world.importer(runtime)
    import_id = ensure_import(
        runtime, importer, "uid-6", spec(FOLDER_A), namespace=NAMESPACE, name="a"
    )
    importer.wait(30)  # no workers: both files stay pending
    removal = logic.finalize(runtime, importer, "uid-6", delete_images=False)
    assert removal == logic.Removal(import_id, cancelled=True, images_deleted=0)
    assert rows(runtime) == [(import_id, "uid-6", "cancelled")]
    with runtime.session() as session:
        assert db.import_counters(session, import_id).cancelled == 2
    assert logic.finalize(runtime, importer, "no-such-uid", delete_images=True) is None


def wait_finished(runtime: CredentialedRuntime, import_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (status := logic.status_for(runtime, import_id, 1))["phase"] not in (
        logic.TERMINAL_PHASES
    ):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def _import_to_the_end(
    world: World, runtime: CredentialedRuntime, uid: str, folder: FakeFolder
) -> str:
    importer = world.importer(runtime)
    import_id = ensure_import(runtime, importer, uid, spec(folder), namespace=NAMESPACE, name=uid)
    importer.wait(30)
    assert wait_finished(runtime, import_id)["phase"] == "Succeeded"
    return import_id


def test_finalize_deletes_only_the_images_no_other_import_found(world: World) -> None:
    runtime = world.runtime()
    world.workers(runtime)
    a = _import_to_the_end(world, runtime, "uid-a", FOLDER_A)  # one, two
    b = _import_to_the_end(world, runtime, "uid-b", FOLDER_B)  # two (already stored), three
    assert logic.status_for(runtime, b, 1)["counters"]["duplicates"] == 1
    with runtime.session() as session:
        keys = {
            image.name: (image.object_key, image.thumbnail_key)
            for image in session.scalars(select(Image))
        }
    assert set(keys) == {"one.png", "two.png", "three.png"}

    removal = logic.finalize(runtime, world.importer(runtime), "uid-a", delete_images=True)
    assert removal == logic.Removal(a, cancelled=False, images_deleted=1)
    with runtime.session() as session:
        assert sorted(i.name for i in session.scalars(select(Image))) == ["three.png", "two.png"]
    assert not any(runtime.store.exists(key) for key in keys["one.png"])
    assert all(runtime.store.exists(k) for name in ("two.png", "three.png") for k in keys[name])

    removal = logic.finalize(runtime, world.importer(runtime), "uid-b", delete_images=True)
    assert removal == logic.Removal(b, cancelled=False, images_deleted=2)
    with runtime.session() as session:
        assert list(session.scalars(select(Image))) == []
    assert list(runtime.store.list_keys()) == []


# -- re-imports ----------------------------------------------------------------------------------


def test_a_new_resource_for_a_folder_downloads_only_what_changed(world: World) -> None:
    folder = FakeFolder(
        "Growing",
        [FakeFile("one.png", make_image(30, 30, "PNG", seed=511)), FakeFile("two.png", IMG[0])],
    )
    with start_route("gdrive-api", folder) as route:
        fake = route.server.app.app.state.drive  # type: ignore[attr-defined]
        runtime = world.runtime(**{k: v for k, v in route.settings.items() if k.endswith("_url")})
        world.workers(runtime)

        def downloads() -> int:
            return sum(r.params.get("alt") == "media" for r in fake.requests)

        _import_to_the_end(world, runtime, "uid-g1", folder)
        assert downloads() == 2
        dict(folder.files())["one.png"].overwrite(make_image(31, 30, "PNG", seed=512))
        fake.add(folder, FakeFile("three.png", IMG[1]))

        second = _import_to_the_end(world, runtime, "uid-g2", folder)
        status = logic.status_for(runtime, second, 1)
        assert status["counters"] == {
            "discovered": 3, "imported": 2, "duplicates": 0, "unchanged": 1, "skipped": 0,
            "failed": 0, "gone": 0,
        }  # fmt: skip
        assert status["message"] == (
            "Imported all 3 files (2 imported, 1 unchanged, 0 already stored, 0 not images, "
            "0 failed)."
        )
        assert downloads() == 4  # the changed file and the new one

        # Nothing changed since: the third resource's import ends with its listing.
        third = _import_to_the_end(world, runtime, "uid-g3", folder)
        assert logic.status_for(runtime, third, 1)["counters"]["unchanged"] == 3
        assert downloads() == 4


# -- credentials -------------------------------------------------------------------------------


def test_the_secrets_credentials_reach_the_planner_and_the_workers(world: World) -> None:
    # The installation's key is wrong; only the Secret's works.
    operator_runtime = world.runtime(google_api_key=SecretStr("wrong-key"))
    world.secrets.put(NAMESPACE, "drive-key", {"GOOGLE_API_KEY": API_KEY})
    ref = SecretRef.from_spec(
        {"source": {"credentialsSecretRef": {"name": "drive-key"}}}, NAMESPACE
    )
    assert ref is not None
    credentials = operator_runtime.credentials_for(ref)
    assert credentials == {"google_api_key": API_KEY}

    worker_runtime = world.runtime(google_api_key=SecretStr("wrong-key"))
    world.workers(worker_runtime)
    with_secret = spec(SECRET_FOLDER, source={
        "url": url(SECRET_FOLDER), "credentialsSecretRef": {"name": "drive-key"}
    })  # fmt: skip
    importer = world.importer(operator_runtime)
    import_id = ensure_import(
        operator_runtime, importer, "uid-c", with_secret, credentials,
        namespace=NAMESPACE, name="c",
    )  # fmt: skip
    importer.wait(30)
    status = wait_finished(operator_runtime, import_id)
    assert status["phase"] == "Succeeded", status
    assert status["counters"]["imported"] == 1
    # The worker read the Secret itself; nothing secret went into the database.
    assert world.secrets.reads == 2
    with operator_runtime.session() as session:
        options = session.get(Import, import_id).options  # type: ignore[union-attr]
    assert options["credentialsSecretRef"]["name"] == "drive-key"
    assert API_KEY not in json.dumps(options)

    # The same folder without the Secret fails on the installation's wrong key.
    plain = ensure_import(
        operator_runtime, importer, "uid-d", spec(SECRET_FOLDER), namespace=NAMESPACE, name="d"
    )
    importer.wait(30)
    failed = logic.status_for(operator_runtime, plain, 1)
    assert failed["phase"] == "Failed"
    assert failed["message"] == (
        "Failed: The Google API key in GOOGLE_API_KEY is not valid: Google rejects it."
    )


def test_a_secret_without_the_expected_keys_is_explained(world: World) -> None:
    runtime = world.runtime()
    world.secrets.put(NAMESPACE, "empty", {"SOMETHING_ELSE": "x"})
    ref = SecretRef.from_spec({"source": {"credentialsSecretRef": {"name": "empty"}}}, NAMESPACE)
    assert ref is not None
    with pytest.raises(Exception, match="has none of the keys GOOGLE_API_KEY, DROPBOX_APP_KEY"):
        runtime.credentials_for(ref)
    missing = SecretRef.from_spec({"source": {"credentialsSecretRef": {"name": "gone"}}}, NAMESPACE)
    assert missing is not None
    with pytest.raises(Exception, match=r"The Secret photos/gone named in .* does not exist"):
        runtime.credentials_for(missing)
