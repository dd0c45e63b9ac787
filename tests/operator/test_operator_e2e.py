"""The operator end to end: ImageImport resources in the Kubernetes emulator, the operator (in
this process, or as `imageimport operator` processes), worker processes, real PostgreSQL, NATS
JetStream and SeaweedFS, and a fake Google Drive folder."""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from imageimport.db.models import Image, Import, ImportItem, ImportSync
from imageimport.operator.logic import rfc3339
from tests.distributed.cluster import stream_last_sequence
from tests.distributed.test_distributed import stored_keys
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, lean_folder, make_image
from tests.fakes.server import Fault
from tests.operator.conftest import NAMESPACE, TERMINAL, Stack
from tests.operator.kube import GROUP, PLURAL, VERSION

FINALIZER = "imageimport.dev/finalizer"

pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.s3, pytest.mark.timeout(180)]


def photo_folder() -> tuple[FakeFolder, dict[str, int]]:
    """12 distinct images, a copy of one, a text file, and an image in a subfolder."""
    images = [
        FakeFile(f"img-{i:02d}.png", make_image(40 + i, 30, "PNG", seed=300 + i), "image/png")
        for i in range(12)
    ]
    files: list[FakeFile | FakeFolder] = [
        *images,
        FakeFile("copy of img-00.png", images[0].content, "image/png"),
        FakeFile("notes.txt", b"not a picture\n" * 30, "text/plain"),
        FakeFolder(
            "sub", [FakeFile("deep.jpg", make_image(64, 48, "JPEG", seed=399), "image/jpeg")]
        ),
    ]
    folder = FakeFolder("operator photos", files)
    # Bytes downloaded: the text file is skipped by its type, without a download.
    total_bytes = sum(f.length for path, f in folder.files() if path != "notes.txt")
    expected = {
        "discovered": 15,
        "imported": 13,
        "duplicates": 1,
        "unchanged": 0,
        "skipped": 1,
        "failed": 0,
        "gone": 0,
    }
    return folder, {**expected, "bytes": total_bytes}


def phases(history: list[dict[str, Any]]) -> list[str]:
    """The phases the resource went through, each once, in order."""
    seen: list[str] = []
    for version in history:
        phase = (version.get("status") or {}).get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def assert_transition_times_move_only_on_change(history: list[dict[str, Any]]) -> None:
    """A condition's lastTransitionTime changes exactly when its status does."""
    last: dict[str, dict[str, Any]] = {}
    rewritten = 0
    for version in history:
        for condition in (version.get("status") or {}).get("conditions", []):
            before = last.get(condition["type"])
            if before is not None and before["status"] == condition["status"]:
                assert condition["lastTransitionTime"] == before["lastTransitionTime"], history
                rewritten += before != condition
            elif before is not None:
                assert condition["lastTransitionTime"] >= before["lastTransitionTime"]
            last[condition["type"]] = condition
    assert rewritten > 0  # statuses were rewritten with the same condition status at least once


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj["status"]["conditions"]}


def import_rows(stack: Stack, uid: str) -> list[tuple[str, str]]:
    with stack.cluster.engine.connect() as connection:
        return [
            (row.id, row.state)
            for row in connection.execute(
                select(Import.id, Import.state).where(Import.external_id == uid)
            )
        ]


def listed_items(stack: Stack, uid: str) -> int:
    with stack.cluster.engine.connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(ImportItem)
                .join(Import, Import.id == ImportItem.import_id)
                .where(Import.external_id == uid)
            )
            or 0
        )


def events_for(stack: Stack, uid: str) -> list[str]:
    return [
        event.get("reason", "")
        for event in stack.kube.objects("v1/events")
        if (event.get("involvedObject") or {}).get("uid") == uid
    ]


def test_import_goes_listing_importing_succeeded_and_removal_deletes_its_images(
    stack_factory: Any, s3_server: Any
) -> None:
    folder, expected = photo_folder()
    stack: Stack = stack_factory(folder)
    # A slow listing and slow downloads, so that every phase lasts long enough to be seen.
    stack.route.faults.add(
        Fault("slow", path="/drive/v3/files", times=2, delay=1.2),
        Fault("slow", path="/drive/v3/files/.+", times=1, delay=0.4),
    )
    stack.cluster.start_worker(concurrency=2)
    stack.start_operator()

    created = stack.create("holiday", {"deleteImagesOnRemoval": True})
    uid = created["metadata"]["uid"]
    done = stack.wait_for_phase("holiday", TERMINAL, timeout=90)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert phases(stack.kube.history(NAMESPACE, "holiday")) == ["Listing", "Importing", "Succeeded"]
    counters = {**status["counters"], "bytes": status["bytes"]}
    assert counters == expected
    assert import_rows(stack, uid) == [(status["importId"], "succeeded")]
    assert status["observedGeneration"] == 1
    assert status["startedAt"] <= status["completedAt"]
    assert status["message"] == (
        "Imported all 15 files (13 imported, 1 already stored, 1 not images, 0 failed)."
    )
    assert conditions(done) == {
        "Ready": ("True", "Succeeded"),
        "Listing": ("False", "Listed"),
        "Importing": ("False", "Finished"),
    }
    history = stack.kube.history(NAMESPACE, "holiday")
    assert_transition_times_move_only_on_change(history)
    assert FINALIZER in done["metadata"]["finalizers"]
    assert {"Listing", "Importing", "Succeeded"} <= set(events_for(stack, uid))
    # The planner published one message per file, none twice.
    assert stream_last_sequence(stack.cluster.nats_url) == 15
    assert len(stack.cluster.images()) == 13
    assert len(stored_keys(stack.cluster, s3_server)) == 26

    stack.delete("holiday")
    stack.wait_for("holiday", lambda obj: obj is None, timeout=30)
    assert stack.cluster.images() == []
    assert stored_keys(stack.cluster, s3_server) == []
    # The import's history stays in the database for the REST API.
    assert import_rows(stack, uid) == [(status["importId"], "succeeded")]
    assert "Removed" in events_for(stack, uid)


def test_a_retry_after_the_end_shows_on_the_resource_until_it_ends_again(
    stack_factory: Any,
) -> None:
    good = [
        FakeFile(f"ok-{i}.png", make_image(30 + i, 20, "PNG", seed=700 + i), "image/png")
        for i in range(5)
    ]
    whole = make_image(64, 48, "JPEG", seed=799)
    broken = FakeFile("broken.jpg", whole[: len(whole) // 3], "image/jpeg")
    stack: Stack = stack_factory(FakeFolder("retried", [*good, broken]))
    stack.cluster.start_worker(concurrency=2)
    operator = stack.start_operator()

    uid = stack.create("retried")["metadata"]["uid"]
    first = stack.wait_for_phase("retried", TERMINAL)["status"]
    assert first["phase"] == "CompletedWithFailures", first
    assert first["counters"]["failed"] == 1 and first["counters"]["imported"] == 5
    assert "completedAt" in first

    # The file is fixed at its source, and its failure retried as POST .../retry does; the
    # download is slowed so that the resource is seen importing again.
    broken.content = whole
    stack.route.faults.add(Fault("slow", path="/drive/v3/files/.+", times=1, delay=2.0))
    assert operator.importer.retry(first["importId"]) == 1
    again = stack.wait_for_phase("retried", {"Importing"}, timeout=30)["status"]
    assert "completedAt" not in again
    assert again["counters"]["failed"] == 0

    done = stack.wait_for_phase("retried", TERMINAL)["status"]
    assert done["phase"] == "Succeeded", done
    assert done["counters"] == {
        "discovered": 6,
        "imported": 6,
        "duplicates": 0,
        "unchanged": 0,
        "skipped": 0,
        "failed": 0,
        "gone": 0,
    }
    assert phases(stack.kube.history(NAMESPACE, "retried")) == [
        "Listing",
        "Importing",
        "CompletedWithFailures",
        "Importing",
        "Succeeded",
    ]
    assert import_rows(stack, uid) == [(done["importId"], "succeeded")]
    assert "Retrying" in events_for(stack, uid)


def test_a_new_resource_for_the_same_folder_fetches_and_queues_only_the_changed_file(
    stack_factory: Any,
) -> None:
    files = [
        FakeFile(f"p-{i}.png", make_image(30 + i, 20, "PNG", seed=720 + i), "image/png")
        for i in range(4)
    ]
    stack: Stack = stack_factory(FakeFolder("growing", list(files)))
    fake = stack.route.server.app.app.state.drive  # type: ignore[attr-defined]

    def downloads() -> int:
        return sum(r.params.get("alt") == "media" for r in fake.requests)

    stack.cluster.start_worker(concurrency=2)
    stack.start_operator()
    stack.create("first")
    first = stack.wait_for_phase("first", TERMINAL)["status"]
    assert first["phase"] == "Succeeded" and first["counters"]["imported"] == 4, first
    fetched = downloads()
    files[0].overwrite(make_image(40, 20, "PNG", seed=729))

    stack.create("second")
    second = stack.wait_for_phase("second", TERMINAL)["status"]
    assert second["phase"] == "Succeeded", second
    assert second["counters"] == {
        "discovered": 4,
        "imported": 1,
        "duplicates": 0,
        "unchanged": 3,
        "skipped": 0,
        "failed": 0,
        "gone": 0,
    }
    assert second["message"] == (
        "Imported all 4 files (1 imported, 3 unchanged, 0 already stored, 0 not images, 0 failed)."
    )
    assert downloads() == fetched + 1
    # The unchanged files were settled while listing: only the changed one was queued.
    assert stream_last_sequence(stack.cluster.nats_url) == 5


class Clock:
    """The operator's "now" for sync schedules, moved by the test (rounds are an hour apart)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def last_round_start(stack: Stack, uid: str) -> datetime:
    """When the import's last sync round started, or, before any, when it was created: what
    an interval counts from (read to the microsecond; the status shows whole seconds)."""
    with stack.cluster.engine.connect() as connection:
        import_id, created = connection.execute(
            select(Import.id, Import.created_at).where(Import.external_id == uid)
        ).one()
        started = connection.scalar(
            select(func.max(ImportSync.started_at)).where(ImportSync.import_id == import_id)
        )
    moment = started or created
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sync_rounds(stack: Stack, uid: str) -> list[tuple[int, str]]:
    with stack.cluster.engine.connect() as connection:
        return [
            (row.round, row.trigger)
            for row in connection.execute(
                select(ImportSync.round, ImportSync.trigger)
                .join(Import, Import.id == ImportSync.import_id)
                .where(Import.external_id == uid)
                .order_by(ImportSync.round)
            )
        ]


def test_spec_sync_lists_the_folder_again_on_schedule_and_suspend_stops_it(
    stack_factory: Any, s3_server: Any
) -> None:
    files = [
        FakeFile(f"s-{i}.png", make_image(30 + i, 20, "PNG", seed=760 + i), "image/png")
        for i in range(3)
    ]
    folder = FakeFolder("synced", list(files))
    stack: Stack = stack_factory(folder)
    fake = stack.route.server.app.app.state.drive  # type: ignore[attr-defined]

    def downloads() -> int:
        return sum(r.params.get("alt") == "media" for r in fake.requests)

    def round_over(number: int) -> Callable[[dict[str, Any] | None], bool]:
        def over(obj: dict[str, Any] | None) -> bool:
            status = (obj or {}).get("status") or {}
            return (
                status.get("sync", {}).get("lastSyncRound") == number
                and status.get("phase") in TERMINAL
            )

        return over

    stack.cluster.start_worker(concurrency=2)
    clock = Clock()
    stack.start_operator(clock=clock)
    hour = timedelta(hours=1)
    uid = stack.create("synced", sync={"interval": "1h", "prune": True})["metadata"]["uid"]
    first = stack.wait_for_phase("synced", TERMINAL)["status"]
    assert first["phase"] == "Succeeded" and first["counters"]["imported"] == 3, first
    created = last_round_start(stack, uid)
    assert first["sync"] == {"suspended": False, "nextSyncTime": rfc3339(created + hour)}
    assert downloads() == 3

    # A file changed, one added and one removed at the source; an hour later, round 1.
    files[0].overwrite(make_image(44, 20, "PNG", seed=769))
    fake.add(folder, FakeFile("s-new.png", make_image(45, 20, "PNG", seed=770), "image/png"))
    fake.remove(files[1])
    clock.now = created + hour
    one = stack.wait_for("synced", round_over(1))
    assert one is not None
    status = one["status"]
    assert status["phase"] == "Succeeded", status
    assert status["importId"] == first["importId"]  # the same import, listed again
    started = last_round_start(stack, uid)
    assert status["sync"] == {
        "suspended": False,
        "lastSyncTime": rfc3339(started),
        "lastSyncRound": 1,
        "lastSyncResult": {"added": 1, "changed": 1, "unchanged": 1, "gone": 1, "pruned": 1},
        "nextSyncTime": rfc3339(started + hour),
    }
    assert (status["counters"]["discovered"], status["counters"]["gone"]) == (3, 1)
    assert downloads() == 5  # the changed file and the new one
    seen = phases(stack.kube.history(NAMESPACE, "synced"))
    assert seen[:4] == ["Listing", "Importing", "Succeeded", "Listing"] and seen[-1] == "Succeeded"
    assert "Syncing" in events_for(stack, uid) and "Retrying" not in events_for(stack, uid)

    # Round 2 an hour after round 1 started: nothing changed, nothing downloaded.
    clock.now = started + hour
    two = stack.wait_for("synced", round_over(2))
    assert two is not None
    assert two["status"]["sync"]["lastSyncResult"] == {
        "added": 0, "changed": 0, "unchanged": 3, "gone": 0, "pruned": 0,
    }  # fmt: skip
    assert downloads() == 5

    # Suspended: status.sync says so at once, and the round due an hour later does not start.
    stack.custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "synced", {"spec": {"sync": {"suspend": True}}}
    )
    suspended = stack.wait_for(
        "synced", lambda obj: bool(obj) and obj["status"]["sync"]["suspended"] is True
    )
    assert suspended is not None and "nextSyncTime" not in suspended["status"]["sync"]
    due = last_round_start(stack, uid) + hour
    clock.now = due
    time.sleep(3)  # six ticks of the sync timer
    assert sync_rounds(stack, uid) == [(1, "schedule"), (2, "schedule")]
    assert stack.get("synced")["status"]["phase"] == "Succeeded"  # type: ignore[index]

    # Resumed: the round it missed starts at once, and one only.
    stack.custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "synced", {"spec": {"sync": {"suspend": False}}}
    )
    three = stack.wait_for("synced", round_over(3))
    assert three is not None
    assert three["status"]["sync"]["nextSyncTime"] == rfc3339(last_round_start(stack, uid) + hour)
    assert sync_rounds(stack, uid) == [(1, "schedule"), (2, "schedule"), (3, "schedule")]
    assert [(row[0], row[1]) for row in import_rows(stack, uid)] == [
        (first["importId"], "succeeded")
    ]


def test_deleting_mid_import_cancels_the_rest_and_keeps_the_images(stack_factory: Any) -> None:
    stack: Stack = stack_factory(big_folder(60, seed=31, name="cancel me"))
    stack.route.faults.add(Fault("slow", path="/drive/v3/files/.+", times=1, delay=0.5))
    stack.cluster.start_worker(concurrency=2)
    stack.start_operator()

    uid = stack.create("half")["metadata"]["uid"]
    stack.wait_for(
        "half",
        lambda obj: (
            bool(obj)
            and obj.get("status", {}).get("phase") == "Importing"
            and obj["status"]["counters"]["imported"] >= 4
        ),
    )
    stack.delete("half")
    stack.wait_for("half", lambda obj: obj is None, timeout=30)

    [(import_id, state)] = import_rows(stack, uid)
    assert state == "cancelled"
    counts = stack.cluster.wait_until(import_id, lambda _, c: "pending" not in c, timeout=30)
    assert counts["cancelled"] > 0
    assert counts.get("done", 0) >= 4
    assert sum(counts.values()) == 60
    # deleteImagesOnRemoval is off: what was imported stays.
    assert len(stack.cluster.images()) == counts["done"]


def test_operator_killed_mid_listing_resumes_without_duplicates(stack_factory: Any) -> None:
    folder = FakeFolder(
        "slow listing", [big_folder(60, seed=n, name=f"part-{n}") for n in range(41, 46)]
    )
    stack: Stack = stack_factory(folder)
    # The root and four subfolders are listed (the planner records files 200 at a time); the
    # last listing hangs until the operator is killed.
    stack.route.faults.add(
        Fault("slow", path="/drive/v3/files", times=5, delay=0.3),
        Fault("slow", path="/drive/v3/files", times=100, delay=120),
    )
    stack.cluster.start_worker()
    stack.cluster.start_worker()
    first = stack.operator_process()

    uid = stack.create("big")["metadata"]["uid"]
    stack.wait_for(
        "big",
        lambda obj: (
            bool(obj)
            and obj.get("status", {}).get("phase") == "Listing"
            and listed_items(stack, uid) >= 200
        ),
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    [(import_id, state)] = import_rows(stack, uid)
    assert state == "listing"
    stack.route.faults.clear()

    stack.start_operator()
    done = stack.wait_for_phase("big", TERMINAL, timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counters"] == {
        "discovered": 300,
        "imported": 300,
        "duplicates": 0,
        "unchanged": 0,
        "skipped": 0,
        "failed": 0,
        "gone": 0,
    }
    assert import_rows(stack, uid) == [(import_id, "succeeded")]
    assert done["status"]["importId"] == import_id
    # Listed twice, published once per file.
    assert stream_last_sequence(stack.cluster.nats_url) == 300
    with stack.cluster.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ImportItem)) == 300
        assert connection.scalar(select(func.count()).select_from(Image)) == 300


def test_two_peered_operators_one_works_the_other_takes_over_when_it_dies(
    stack_factory: Any,
) -> None:
    # The planner records files 200 at a time (plan.BATCH_SIZE).
    parts = [big_folder(250, seed=61, name="part-61"), big_folder(50, seed=62, name="part-62")]
    folder = FakeFolder("peered", parts)
    stack: Stack = stack_factory(folder)
    # The root and the first subfolder are listed; the next listing hangs until the leader dies.
    stack.route.faults.add(
        Fault("slow", path="/drive/v3/files", times=2, delay=0.3),
        Fault("slow", path="/drive/v3/files", times=100, delay=120),
    )
    stack.custom_objects.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        NAMESPACE,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "imageimport"}},
    )

    def peering(priority: int, standby: bool = False) -> Any:
        return stack.operator_process(
            *("--peering", "imageimport", "--priority", str(priority), "--peering-lifetime", "4"),
            standby=standby,
        )

    def live_peers() -> dict[str, Any]:
        found = stack.kube.get(NAMESPACE, "imageimport", "kopf.dev/v1/kopfpeerings") or {}
        return {k: v for k, v in (found.get("status") or {}).items() if v}

    # Replicas start paused; a replica resumes once it sees no live one above it.
    resumed = "Resuming operations after the pause"
    leader = peering(200)
    standby = peering(100, standby=True)
    deadline = time.monotonic() + 30
    while len(live_peers()) < 2:
        assert time.monotonic() < deadline, (live_peers(), stack.cluster.log_of(standby))
        time.sleep(0.1)
    assert sorted(peer["priority"] for peer in live_peers().values()) == [100, 200]
    assert resumed in stack.cluster.log_of(leader)
    stack.cluster.start_worker()

    uid = stack.create("peered")["metadata"]["uid"]
    stack.wait_for(
        "peered",
        lambda obj: (
            bool(obj)
            and obj.get("status", {}).get("phase") == "Listing"
            and listed_items(stack, uid) >= 200
        ),
    )
    # Only the leader has handled the resource so far; the standby stayed paused.
    assert "Handler 'start' succeeded" in stack.cluster.log_of(leader)
    assert "Handler 'start'" not in stack.cluster.log_of(standby)
    assert resumed not in stack.cluster.log_of(standby)
    leader.send_signal(signal.SIGKILL)
    leader.wait()
    [(import_id, state)] = import_rows(stack, uid)
    assert state == "listing"
    stack.route.faults.clear()

    done = stack.wait_for_phase("peered", TERMINAL, timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counters"]["imported"] == 300
    assert done["status"]["importId"] == import_id
    assert import_rows(stack, uid) == [(import_id, "succeeded")]
    standby_log = stack.cluster.log_of(standby)
    assert resumed in standby_log
    assert "Handler 'resume' succeeded" in standby_log
    # Listed by both, published once per file.
    assert stream_last_sequence(stack.cluster.nats_url) == 300
    with stack.cluster.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Image)) == 300


def test_a_spec_that_cannot_work_fails_at_once_and_records_nothing(stack_factory: Any) -> None:
    stack: Stack = stack_factory(big_folder(3, seed=51, name="never"))
    stack.start_operator()
    uid = stack.create("elsewhere", destination={"bucket": "someone-elses"})["metadata"]["uid"]
    failed = stack.wait_for_phase("elsewhere", TERMINAL)
    status = failed["status"]
    assert status["phase"] == "Failed"
    assert status["message"].startswith("spec.destination.bucket is 'someone-elses'")
    assert conditions(failed)["Ready"] == ("False", "InvalidSpec")
    assert "importId" not in status
    assert import_rows(stack, uid) == []
    assert "InvalidSpec" in events_for(stack, uid)
    # Deleting it needs nothing recorded.
    stack.delete("elsewhere")
    stack.wait_for("elsewhere", lambda obj: obj is None, timeout=30)


def test_credentials_come_from_the_secret_even_when_it_comes_later(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client
    from pydantic import SecretStr

    from imageimport.operator import handlers
    from tests.pipeline.routes import API_KEY

    monkeypatch.setattr(handlers, "SECRET_RETRY_SECONDS", 0.5)
    stack: Stack = stack_factory(big_folder(9, seed=52, name="keyed"))
    # The operator's own key is wrong: listing works only with the Secret's.
    stack.settings = stack.settings.model_copy(update={"google_api_key": SecretStr("wrong")})
    stack.start_operator()

    uid = stack.create(
        "keyed",
        source={"url": stack.route.url, "credentialsSecretRef": {"name": "drive-credentials"}},
    )["metadata"]["uid"]
    waiting = stack.wait_for_phase("keyed", {"Pending"})
    assert waiting["status"]["message"] == (
        "Waiting for credentials: The Secret photos/drive-credentials named in "
        "spec.source.credentialsSecretRef does not exist."
    )
    assert import_rows(stack, uid) == []

    client.CoreV1Api(stack.kube.api_client()).create_namespaced_secret(
        NAMESPACE,
        {
            "metadata": {"name": "drive-credentials"},
            "data": {"GOOGLE_API_KEY": base64.b64encode(API_KEY.encode()).decode()},
        },
    )
    listed = stack.wait_for(
        "keyed",
        lambda obj: bool(obj) and obj.get("status", {}).get("counters", {}).get("discovered") == 9,
    )
    assert listed is not None
    assert listed["status"]["phase"] == "Importing"  # no workers in this test
    [(import_id, _)] = import_rows(stack, uid)
    assert listed["status"]["importId"] == import_id
    assert "WaitingForSecret" in events_for(stack, uid)
    # The Secret's value reaches the source, never the resource, the database or events.
    import json

    from sqlalchemy import create_engine, text

    assert API_KEY not in json.dumps(listed)
    assert API_KEY not in json.dumps(events_for(stack, uid), default=str)
    engine = create_engine(stack.settings.effective_database_url)
    with engine.connect() as connection:
        dumped = [
            json.dumps(list(row), default=str)
            for table in ("imports", "import_items")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        ]
    engine.dispose()
    assert dumped and not any(API_KEY in row for row in dumped)


def test_a_resource_in_lean_mode_stores_originals_only(stack_factory: Any, s3_server: Any) -> None:
    lean = lean_folder("operator lean")
    stack: Stack = stack_factory(lean.folder)
    stack.cluster.start_worker(concurrency=2)
    stack.start_operator()

    created = stack.create("lean", {"mode": "lean", "deleteImagesOnRemoval": True})
    uid = created["metadata"]["uid"]
    done = stack.wait_for_phase("lean", TERMINAL, timeout=90)
    status = done["status"]
    # Damaged pixels pass the headers: found later, when their thumbnails are made.
    assert status["phase"] == "Succeeded", status
    assert status["counters"]["imported"] == len(lean.good) + len(lean.corrupt)
    with stack.cluster.engine.connect() as connection:
        options = connection.scalar(select(Import.options).where(Import.external_id == uid))
        states = set(connection.scalars(select(Image.state)))
    assert options is not None and options["mode"] == "lean"
    assert states == {"unverified"}
    originals = sorted(original for _, original, _ in stack.cluster.images())
    assert sorted(stored_keys(stack.cluster, s3_server)) == originals

    stack.delete("lean")
    stack.wait_for("lean", lambda obj: obj is None, timeout=30)
    assert stack.cluster.images() == []
    assert stored_keys(stack.cluster, s3_server) == []
