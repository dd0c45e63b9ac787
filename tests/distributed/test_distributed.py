"""The distributed mode with real PostgreSQL, NATS JetStream and SeaweedFS, and worker
processes: every image exactly once, whatever crashes."""

from __future__ import annotations

import hashlib
import signal
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from tests.distributed.cluster import Cluster, stream_last_sequence
from tests.fakes.folder import EVERY_DOWNLOAD, FakeFile, FakeFolder, big_folder, make_image
from tests.fakes.server import Fault, FaultPlan
from tests.pipeline.routes import start_route

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.nats, pytest.mark.timeout(420)]


def stored_keys(cluster: Cluster, s3: Any) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cluster.env["S3_BUCKET"]):
        keys.extend(item["Key"] for item in page.get("Contents", ()))
    return keys


def assert_exactly_once(cluster: Cluster, s3: Any, count: int, counts: dict[str, int]) -> None:
    assert counts == {"done": count}, counts
    images = cluster.images()
    assert len(images) == count
    assert len({sha for sha, _, _ in images}) == count
    expected = sorted(key for _, original, thumb in images for key in (original, thumb))
    assert sorted(stored_keys(cluster, s3)) == expected


def test_three_workers_import_2500_images_exactly_once(
    cluster_factory: Any, s3_server: Any
) -> None:
    with start_route("gdrive-api", big_folder(2500, seed=11)) as route:
        cluster = cluster_factory(route)
        for _ in range(3):
            cluster.start_worker(concurrency=8)
        import_id = cluster.plan(route.url)
        counts = cluster.wait_finished(import_id)
        assert cluster.state(import_id)[0] == "succeeded"
        assert_exactly_once(cluster, s3_server, 2500, counts)
        # The planner published one message per file, none twice.
        assert stream_last_sequence(cluster.nats_url) == 2500


def test_worker_killed_mid_import_loses_and_duplicates_nothing(
    cluster_factory: Any, s3_server: Any
) -> None:
    with start_route("gdrive-api", big_folder(1200, seed=12)) as route:
        route.faults.latency = 0.01  # long enough that the kill lands mid-import
        cluster = cluster_factory(route)
        victim = cluster.start_worker(concurrency=8)
        cluster.start_worker(concurrency=8)
        import_id = cluster.plan(route.url)
        cluster.wait_until(import_id, lambda _, c: c.get("done", 0) >= 200)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        cluster.start_worker(concurrency=8)
        counts = cluster.wait_finished(import_id)
        assert_exactly_once(cluster, s3_server, 1200, counts)


def test_nats_restart_mid_import(cluster_factory: Any, s3_server: Any, nats_server: Any) -> None:
    if nats_server.external:
        pytest.skip("cannot restart an external NATS server")
    with start_route("gdrive-api", big_folder(1000, seed=13)) as route:
        route.faults.latency = 0.01
        cluster = cluster_factory(route)
        cluster.start_worker()
        cluster.start_worker()
        import_id = cluster.plan(route.url)
        cluster.wait_until(import_id, lambda _, c: c.get("done", 0) >= 150)
        nats_server.restart()
        counts = cluster.wait_finished(import_id)
        assert_exactly_once(cluster, s3_server, 1000, counts)


def test_s3_unavailable_for_seconds_mid_import(cluster_factory: Any, s3_server: Any) -> None:
    if s3_server.external:
        pytest.skip("cannot stop an external S3 server")
    with start_route("gdrive-api", big_folder(800, seed=14)) as route:
        route.faults.latency = 0.01
        cluster = cluster_factory(route)
        cluster.start_worker()
        cluster.start_worker()
        import_id = cluster.plan(route.url)
        cluster.wait_until(import_id, lambda _, c: c.get("done", 0) >= 100)
        s3_server.stop()
        time.sleep(5)
        s3_server.start()
        counts = cluster.wait_finished(import_id)
        assert_exactly_once(cluster, s3_server, 800, counts)


def test_database_connections_dropped_mid_import(cluster_factory: Any, s3_server: Any) -> None:
    with start_route("gdrive-api", big_folder(800, seed=15)) as route:
        route.faults.latency = 0.01
        cluster = cluster_factory(route)
        cluster.start_worker()
        cluster.start_worker()
        import_id = cluster.plan(route.url)
        for threshold in (100, 300, 500):
            cluster.wait_until(import_id, lambda _, c, t=threshold: c.get("done", 0) >= t)
            assert cluster.drop_database_connections() > 0
        counts = cluster.wait_finished(import_id)
        assert_exactly_once(cluster, s3_server, 800, counts)


def test_planner_killed_mid_listing_then_resumed_publishes_nothing_twice(
    cluster_factory: Any, s3_server: Any
) -> None:
    folder = FakeFolder(
        "slow listing",
        [big_folder(400, seed=n, name=f"part-{n}") for n in (16, 17, 18)],
    )
    with start_route("gdrive-api", folder) as route:
        # Each listing request (and download) takes a while: the kill lands mid-listing.
        route.faults.add(Fault("slow", path="/drive/v3/files", times=100, delay=1.0))
        cluster = cluster_factory(route)
        cluster.start_worker()
        planner = cluster.command("import", route.url, "--detach")
        deadline = time.monotonic() + 60
        import_id = None
        while time.monotonic() < deadline:
            try:
                with cluster.engine.connect() as connection:
                    row = connection.execute(
                        text("SELECT import_id, count(*) FROM import_items GROUP BY import_id")
                    ).first()
            except ProgrammingError:
                row = None  # the planner has not created the tables yet
            if row and row[1] >= 400:
                import_id = row[0]
                break
            time.sleep(0.1)
        assert import_id is not None, cluster.logs()
        planner.send_signal(signal.SIGKILL)
        planner.wait()
        state, _ = cluster.state(import_id)
        assert state == "listing"
        resumed = cluster.run("resume")
        assert resumed.returncode == 0, resumed.stderr
        counts = cluster.wait_finished(import_id)
        assert_exactly_once(cluster, s3_server, 1200, counts)
        assert stream_last_sequence(cluster.nats_url) == 1200


def test_source_fault_storm_fails_only_the_broken_files(
    cluster_factory: Any, s3_server: Any
) -> None:
    good = [FakeFile(f"ok-{i}.png", make_image(40, 30, "PNG", seed=100 + i)) for i in range(150)]
    broken = [
        FakeFile(f"bad-{i}.jpg", make_image(300, 200, "JPEG", seed=i)[:200]) for i in range(5)
    ]
    folder = FakeFolder("stormy", [*good, *broken])
    faults = FaultPlan()
    faults.add(
        Fault("429", times=2, retry_after=0.2),
        Fault("500", times=1),
        Fault("drop", path="/drive/v3/files/.+", times=1),
    )
    with start_route("gdrive-api", folder, faults) as route:
        cluster = cluster_factory(route)
        cluster.start_worker()
        cluster.start_worker()
        import_id = cluster.plan(route.url)
        counts = cluster.wait_finished(import_id)
        assert counts == {"done": 150, "failed": 5}, counts
        with cluster.engine.connect() as connection:
            failed = connection.execute(
                text("SELECT name, reason FROM import_items WHERE state = 'failed'")
            ).all()
        assert sorted(name for name, _ in failed) == sorted(f.name for f in broken)
        assert all("Corrupt or truncated" in reason for _, reason in failed)
        assert sum(faults.seen.values()) > 300


def test_wrong_bytes_are_downloaded_again_then_fail_only_that_file(
    cluster_factory: Any, s3_server: Any
) -> None:
    good = [FakeFile(f"ok-{i}.png", make_image(40, 30, "PNG", seed=300 + i)) for i in range(30)]
    once = FakeFile("once.jpg", make_image(300, 200, "JPEG", seed=331))
    always = FakeFile("always.jpg", make_image(200, 100, "JPEG", seed=332))
    folder = FakeFolder("damaged on the way", [*good, once, always])
    corrupt = {once.id: 1, always.id: EVERY_DOWNLOAD}
    with start_route("dropbox-api", folder, corrupt=corrupt) as route:
        cluster = cluster_factory(route)
        cluster.env["MAX_DELIVER"] = "3"
        cluster.start_worker()
        cluster.start_worker()
        import_id = cluster.plan(route.url)
        counts = cluster.wait_finished(import_id)
        served_wrong = dict(route.server.app.app.state.dropbox.corruption.served)  # type: ignore[attr-defined]
    assert counts == {"done": 31, "failed": 1}, counts
    assert cluster.state(import_id)[0] == "completed_with_failures"
    assert served_wrong == {once.id: 1, always.id: 3}
    with cluster.engine.connect() as connection:
        failed = connection.execute(
            text("SELECT name, reason FROM import_items WHERE state = 'failed'")
        ).all()
    assert [name for name, _ in failed] == ["always.jpg"]
    assert failed[0][1].startswith(
        "Gave up after 3 attempts: The bytes downloaded for 'always.jpg' do not match the "
        "checksum Dropbox gives for this file (content_hash "
    ), failed[0][1]
    # The stored bytes are the files' own, never the damaged ones.
    assert {sha for sha, _, _ in cluster.images()} == {
        hashlib.sha256(f.read()).hexdigest() for f in [*good, once]
    }


def test_a_detached_sync_round_has_the_workers_fetch_only_what_changed_and_prunes(
    cluster_factory: Any, s3_server: Any
) -> None:
    folder = FakeFolder(
        "synced",
        [FakeFile(f"{n}.png", make_image(30 + n, 20, "PNG", seed=950 + n)) for n in range(6)],
    )
    files = dict(folder.files())
    with start_route("gdrive-api", folder) as route:
        drive = route.server.app.app.state.drive  # type: ignore[attr-defined]

        def downloads() -> list[str]:
            return [
                r.path.rpartition("/")[2] for r in drive.requests if r.params.get("alt") == "media"
            ]

        cluster = cluster_factory(route)
        cluster.start_worker(concurrency=4)
        cluster.start_worker(concurrency=4)
        import_id = cluster.plan(route.url)
        assert_exactly_once(cluster, s3_server, 6, cluster.wait_finished(import_id))
        fetched = len(downloads())
        files["0.png"].overwrite(make_image(60, 20, "PNG", seed=960))
        added = FakeFile("6.png", make_image(40, 40, "PNG", seed=961))
        drive.add(folder, added)
        drive.remove(files["5.png"])

        synced = cluster.run("sync", import_id, "--prune", "--detach")
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.strip().splitlines()[-1] == import_id
        assert "Sync round 1: 1 added, 1 changed, 4 unchanged, 1 gone, 1 images pruned." in (
            synced.stderr
        )
        counts = cluster.wait_finished(import_id)
        assert cluster.state(import_id)[0] == "succeeded"
        assert counts == {"done": 6, "gone": 1}
        # Only the changed and the added file reached the workers, as new messages.
        assert sorted(downloads()[fetched:]) == sorted([files["0.png"].id, added.id])
        assert stream_last_sequence(cluster.nats_url) == 6 + 2
        # The removed file's image and objects are gone; the changed file's first version stays.
        images = cluster.images()
        assert len(images) == 6 + 2 - 1
        expected = sorted(key for _, original, thumb in images for key in (original, thumb))
        assert sorted(stored_keys(cluster, s3_server)) == expected
