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
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import create_engine, select

from imageimport.db.models import TERMINAL_IMPORT_STATES, Import, ImportItem
from imageimport.pipeline import process
from imageimport.settings import Settings
from imageimport.storage.local import LocalStore
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

    monkeypatch.setattr(LocalStore, "put_file", disk_full)
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
        planned = subprocess.run(
            [sys.executable, "-m", "imageimport", "import", "--detach", route.url],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
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
