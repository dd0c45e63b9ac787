"""Faults that must end, not loop: a full object store, and a file whose processing always
crashes (in-process, and as a worker process that dies on it every time, with real NATS).

The database, the queue and the object store going away and coming back mid-import are
covered by tests/distributed/test_distributed.py (kill -9 of a worker, NATS restart, S3 down,
PostgreSQL connections dropped)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from moto import mock_aws
from sqlalchemy import create_engine, select

from imageimport.db.models import TERMINAL_IMPORT_STATES, Import, ImportItem
from imageimport.pipeline import process
from imageimport.settings import Settings
from imageimport.storage.local import LocalStore
from imageimport.storage.s3 import S3Store
from tests.commands import run_imageimport
from tests.distributed.cluster import purge_stream
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import SettingsFactory, imported, items_by_path, serve_route
from tests.servers import free_port

PICTURES = [FakeFile(f"p{n}.jpg", make_image(30, 20, "JPEG", seed=300 + n)) for n in range(6)]
FOLDER = FakeFolder("Faulty", [*PICTURES, FakeFile("readme.txt", b"not an image\n")])
POISON = PICTURES[2]
POISON_SHA = hashlib.sha256(POISON.content).hexdigest()
_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}


@pytest.mark.timeout(60)
def test_a_full_object_store_fails_items_with_a_clear_reason(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: Counter[str] = Counter()

    def disk_full(self: LocalStore, key: str, *_: Any) -> None:
        writes[key] += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))

    # The disk write itself fails; the store says what that means.
    monkeypatch.setattr(LocalStore, "_write", disk_full)
    with serve_route("gdrive-api", FOLDER) as route:
        settings = make_settings(max_deliver=3, **route.settings)
        started = time.monotonic()
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures"
            items = items_by_path(runtime, result.import_id)
    assert time.monotonic() - started < 30
    assert items["readme.txt"].state == "skipped"
    for picture in PICTURES:
        item = items[picture.name]
        assert item.state == "failed"
        assert item.reason == (
            "Gave up after 3 attempts: The object store is full (No space left on device)."
        )
    # Tried MAX_DELIVER times each, then left alone: no loop.
    assert sorted(writes.values()) == [3] * len(PICTURES)


def _s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><Resource>/bucket/key</Resource>"
        "<RequestId>1</RequestId></Error>"
    ).encode()


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def _s3_answers_uploads_with(
    monkeypatch: pytest.MonkeyPatch, status: int, body: bytes
) -> Counter[str]:
    """Every PutObject of every S3Store gets this answer, parsed by botocore like one from a
    real server; returns the count of uploads per object path."""
    uploads: Counter[str] = Counter()

    def answer(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        uploads[urlsplit(request.url).path] += 1
        headers = {"Content-Type": "application/xml", "Content-Length": str(len(body))}
        return AWSResponse(request.url, status, headers, _Body(body))

    created = S3Store.__init__

    def init(self: S3Store, *args: Any, **kwargs: Any) -> None:
        created(self, *args, **kwargs)
        # First, so it answers before moto does.
        self.client.meta.events.register_first("before-send.s3.PutObject", answer)

    monkeypatch.setattr(S3Store, "__init__", init)
    return uploads


def _moto_settings(make_settings: SettingsFactory, **overrides: Any) -> Settings:
    return make_settings(
        s3_bucket="the-bucket",
        s3_access_key_id="moto-access-key",
        s3_secret_access_key="moto-secret-key",
        **overrides,
    )


@pytest.mark.timeout(60)
def test_a_full_s3_store_fails_items_with_a_clear_reason(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MinIO's answer when its disks are full."""
    full = _s3_error(
        "XMinioStorageFull",
        "Storage backend has reached its minimum free drive threshold. "
        "Please delete a few objects to proceed.",
    )
    uploads = _s3_answers_uploads_with(monkeypatch, 507, full)
    with mock_aws(), serve_route("gdrive-api", FOLDER) as route:
        settings = _moto_settings(make_settings, max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures"
            items = items_by_path(runtime, result.import_id)
    assert items["readme.txt"].state == "skipped"
    for picture in PICTURES:
        item = items[picture.name]
        assert item.state == "failed"
        assert item.reason == (
            "Gave up after 3 attempts: The object store is full (S3 at AWS S3 answered "
            "XMinioStorageFull (HTTP 507) for bucket 'the-bucket')."
        )
    # Each picture's upload tried MAX_DELIVER times (botocore does not retry a 507), no more.
    assert sorted(uploads.values()) == [3] * len(PICTURES)


@pytest.mark.timeout(60)
def test_a_file_over_the_s3_size_limit_fails_at_once(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_large = _s3_error(
        "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size."
    )
    uploads = _s3_answers_uploads_with(monkeypatch, 400, too_large)
    with mock_aws(), serve_route("gdrive-api", FOLDER) as route:
        settings = _moto_settings(make_settings, max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures"
            items = items_by_path(runtime, result.import_id)
    for picture in PICTURES:
        item = items[picture.name]
        assert item.state == "failed"
        assert item.reason == (
            "The object store refuses files this large (S3 at AWS S3 answered EntityTooLarge "
            "(HTTP 400))."
        )
    # The same file will never fit: no retries.
    assert sorted(uploads.values()) == [1] * len(PICTURES)


@pytest.mark.timeout(60)
def test_a_poisoned_file_fails_after_max_deliver_in_process(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()
    inspect = process.inspect

    def poisoned(file: BinaryIO, *args: Any, **kwargs: Any) -> Any:
        file.seek(0)
        digest = hashlib.sha256(file.read()).hexdigest()
        calls[digest] += 1
        if digest == POISON_SHA:
            raise RuntimeError("decoder exploded")
        return inspect(file, *args, **kwargs)

    monkeypatch.setattr(process, "inspect", poisoned)
    with serve_route("gdrive-api", FOLDER) as route:
        settings = make_settings(max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures"
            items = items_by_path(runtime, result.import_id)
    states = {path: item.state for path, item in items.items()}
    assert states == {p.name: "done" for p in PICTURES if p is not POISON} | {
        POISON.name: "failed",
        "readme.txt": "skipped",
    }
    assert items[POISON.name].reason == ("Gave up after 3 attempts: RuntimeError: decoder exploded")
    assert calls[POISON_SHA] == 3


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    wrapper = Path(__file__).with_name("poison_worker.py")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(wrapper), "-v", "worker", "--concurrency", "1"],
            env=env | {"HEALTH_PORT": str(free_port())},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


@pytest.mark.timeout(180)
def test_a_file_that_kills_its_worker_every_time_ends_failed(
    nats_server: Any, tmp_path: Path
) -> None:
    purge_stream(nats_server.url)
    database = tmp_path / "shared.db"
    with serve_route("gdrive-api", FOLDER) as route:
        env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
        env |= route.env | {
            "DATABASE_URL": f"sqlite:///{database}",
            "DATA_DIR": str(tmp_path / "data"),
            "NATS_URL": nats_server.url,
            "NATS_ACK_WAIT_SECONDS": "5",
            "MAX_DELIVER": "2",
            "SOURCE_RETRY_MAX_WAIT_SECONDS": "0.5",
            "POISON_SHA256": POISON_SHA,
            "PYTHONUNBUFFERED": "1",
        }
        planned = run_imageimport(
            "import", "--detach", route.url, env=env, cwd=tmp_path, timeout=60
        )
        assert planned.returncode == 0, planned.stderr
        import_id = planned.stdout.strip().splitlines()[-1]

        log = tmp_path / "worker.log"
        engine = create_engine(f"sqlite:///{database}")
        crashes = 0
        worker = _worker(env, log)
        try:
            deadline = time.monotonic() + 120
            while True:
                with engine.connect() as connection:
                    state = connection.scalar(select(Import.state).where(Import.id == import_id))
                if state in TERMINAL_IMPORT_STATES:
                    break
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                code = worker.poll()
                if code is not None:
                    assert code == 1, log.read_text()[-4000:]
                    crashes += 1
                    worker = _worker(env, log)  # like a supervisor (Kubernetes) would
                time.sleep(0.2)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        with engine.connect() as connection:
            rows = connection.execute(
                select(ImportItem.name, ImportItem.state, ImportItem.reason).where(
                    ImportItem.import_id == import_id
                )
            ).all()
        engine.dispose()
    settled = {name: (state, reason) for name, state, reason in rows}
    assert state == "completed_with_failures"
    assert settled[POISON.name] == ("failed", "Gave up after 2 attempts that crashed.")
    assert {n: s for n, (s, _) in settled.items() if n != POISON.name} == {
        p.name: "done" for p in PICTURES if p is not POISON
    } | {"readme.txt": "skipped"}
    # Each delivery up to MAX_DELIVER killed a worker; the next one gave up instead.
    assert crashes == 2, log.read_text()[-4000:]
