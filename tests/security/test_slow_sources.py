"""Sources that drip: a file whose bytes come one every few seconds must end (too slow, or
past its deadline) instead of holding a slot forever; one import's dripping files must not
starve another import; and a process with dripping downloads in flight must stop soon after
SIGTERM, handing those files back to the queue untried.

Deadlines are asserted by the state and reason they leave, with small settings; the only
wall-clock bounds are at least 5x the configured values."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageimport.cli import HTTP_SHUTDOWN_SECONDS
from imageimport.db.models import ImportItem
from imageimport.pipeline.pool import STOP_BOUND_SECONDS, WorkerPool
from imageimport.queue.base import JobQueue
from imageimport.queue.memory import MemoryQueue
from imageimport.queue.nats import NatsQueue
from imageimport.runtime import Runtime
from imageimport.services.embedded import snapshot
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from tests.commands import run_imageimport
from tests.distributed.cluster import purge_stream
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import Route, SettingsFactory, imported, items_by_path, serve_route
from tests.servers import free_port

_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
API_TOKEN = "slow-sources-token-1f2e"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


class Drip:
    """Wraps a fake: answers requests for the chosen files as the fake would, except that
    the body goes out one byte every `interval` seconds. Counts the requests per file and
    the drips in progress."""

    def __init__(self, app: ASGIApp, needles: dict[str, str], interval: float) -> None:
        self.app = app
        self.needles = needles  # what identifies a file's download in a request -> its name
        self.interval = interval
        self.started: Counter[str] = Counter()
        self.active = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        target = f"{scope['path']}?{scope['query_string'].decode()} "
        target += headers.get("dropbox-api-arg", "")
        name = next((n for needle, n in self.needles.items() if needle in target), None)
        if name is None:
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.started[name] += 1
            self.active += 1

        async def dripping(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            for offset in range(len(body)):
                more = offset + 1 < len(body) or message.get("more_body", False)
                await send({"type": "http.response.body", "body": body[offset : offset + 1],
                            "more_body": more})  # fmt: skip
                await asyncio.sleep(self.interval)

        try:
            await self.app(scope, receive, dripping)
        finally:
            with self._lock:
                self.active -= 1


def _download_needles(route: str, files: list[FakeFile]) -> dict[str, str]:
    """What each route's download request for a file contains (and no listing request does)."""
    if route == "gdrive-api":
        return {f"/drive/v3/files/{f.id}?alt=media": f.name for f in files}
    if route == "gdrive-public":
        return {f"/download?id={f.id}&": f.name for f in files}
    return {f'/{f.name}"': f.name for f in files}  # dropbox-api: the path in Dropbox-API-Arg


@contextmanager
def dripping(
    route_name: str, folder: FakeFolder, drips: list[FakeFile], interval: float
) -> Iterator[tuple[Route, Drip]]:
    with serve_route(route_name, folder) as route:
        drip = Drip(route.tap.app, _download_needles(route_name, drips), interval)
        route.tap.app = drip
        yield route, drip


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def picture(name: str, seed: int) -> FakeFile:
    return FakeFile(name, make_image(40, 30, "JPEG", seed=seed), "image/jpeg")


# -- one file ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("route_name", ["gdrive-api", "gdrive-public", "dropbox-api"])
def test_a_dripping_file_is_retried_then_fails_as_too_slow(
    route_name: str, make_settings: SettingsFactory
) -> None:
    slow = picture("drip.jpg", 1)
    folder = FakeFolder("Slow", [slow, picture("fine.jpg", 2)])
    # Two bytes a second; the body is ~700 bytes, so it would take minutes to arrive.
    with dripping(route_name, folder, [slow], interval=0.5) as (route, drip):
        settings = make_settings(
            download_min_bytes_per_second=100,
            download_low_speed_seconds=2,
            max_deliver=2,
            **route.settings,
        )
        with imported(settings, route.url) as (runtime, result):
            items = items_by_path(runtime, result.import_id)
    assert result.state == "completed_with_failures"
    assert items["fine.jpg"].state == "done"
    assert (items["drip.jpg"].state, items["drip.jpg"].reason) == (
        "failed",
        "Gave up after 2 attempts: The download was too slow: less than 100 bytes per second "
        "over 2 seconds (DOWNLOAD_MIN_BYTES_PER_SECOND, DOWNLOAD_LOW_SPEED_SECONDS).",
    )
    assert drip.started == {"drip.jpg": 2}  # retried, up to MAX_DELIVER attempts
    wait_for(lambda: drip.active == 0, 30, "the server to see the connections closed")


@pytest.mark.timeout(180)
def test_a_silent_body_is_cut_by_the_speed_window_not_the_read_timeout(
    make_settings: SettingsFactory,
) -> None:
    """One byte, then silence: the read blocks; the read timeout is far away, the window is
    not, and the blocked read is woken when the window ends."""
    slow = picture("silent.jpg", 3)
    with dripping("gdrive-api", FakeFolder("Silent", [slow]), [slow], interval=3600) as (
        route,
        drip,
    ):
        settings = make_settings(
            http_timeout_seconds=3600,
            download_min_bytes_per_second=100,
            download_low_speed_seconds=2,
            max_deliver=1,
            **route.settings,
        )
        with imported(settings, route.url) as (runtime, result):
            items = items_by_path(runtime, result.import_id)
    assert (items["silent.jpg"].state, items["silent.jpg"].reason) == (
        "failed",
        "Gave up after 1 attempts: The download was too slow: less than 100 bytes per second "
        "over 2 seconds (DOWNLOAD_MIN_BYTES_PER_SECOND, DOWNLOAD_LOW_SPEED_SECONDS).",
    )
    assert drip.started == {"silent.jpg": 1}


@pytest.mark.timeout(180)
def test_a_file_past_its_deadline_fails_at_once(make_settings: SettingsFactory) -> None:
    slow = picture("trickle.jpg", 4)
    folder = FakeFolder("Trickle", [slow, picture("fine.jpg", 5)])
    # Ten bytes a second: above the minimum speed, but ~70 s for the whole body.
    with dripping("gdrive-api", folder, [slow], interval=0.1) as (route, drip):
        settings = make_settings(
            download_deadline_seconds=2,
            download_min_bytes_per_second=1,
            download_low_speed_seconds=1,
            max_deliver=3,
            **route.settings,
        )
        with imported(settings, route.url) as (runtime, result):
            items = items_by_path(runtime, result.import_id)
    assert items["fine.jpg"].state == "done"
    assert (items["trickle.jpg"].state, items["trickle.jpg"].reason) == (
        "failed",
        "The download took longer than 2 seconds (DOWNLOAD_DEADLINE_SECONDS) and was stopped.",
    )
    assert items["trickle.jpg"].attempts == 0  # failed for good, not retried
    assert drip.started == {"trickle.jpg": 1}


# -- fair scheduling --------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("queue_kind", ["memory", pytest.param("nats", marks=pytest.mark.nats)])
def test_one_imports_dripping_files_do_not_starve_another_import(
    queue_kind: str, make_settings: SettingsFactory, request: pytest.FixtureRequest
) -> None:
    """Import A is 12 files that drip forever (no minimum speed, a far deadline); import B,
    started once A's files hold their slots, still gets all of its 20 images done. With
    NATS, A's messages are ahead of B's in the stream."""
    drips = [picture(f"drip-{n}.jpg", 10 + n) for n in range(12)]
    good = [picture(f"good-{n}.jpg", 100 + n) for n in range(20)]
    folder_a, folder_b = FakeFolder("A", list(drips)), FakeFolder("B", list(good))
    root = FakeFolder("root", [folder_a, folder_b])
    with dripping("gdrive-api", root, drips, interval=2.0) as (route, drip):
        settings = make_settings(
            concurrency=4,
            download_min_bytes_per_second=0,
            download_deadline_seconds=3600,
            **route.settings,
        )
        runtime = Runtime(settings)
        queue: JobQueue = MemoryQueue()
        if queue_kind == "nats":
            url = request.getfixturevalue("nats_server").url
            purge_stream(url)
            queue = NatsQueue(url, settings.max_deliver)
        pool = WorkerPool(runtime, queue, settings.concurrency)
        pool.start()
        try:
            importer = Importer(runtime, queue)
            url = "https://drive.google.com/drive/folders/{}"
            a = importer.start(url.format(folder_a.id))
            wait_for(lambda: drip.active >= 3, 60, "import A's files to hold their slots")
            b = importer.start(url.format(folder_b.id))
            peak = 0
            deadline = time.monotonic() + 120
            while snapshot(runtime, b).state != "succeeded":
                peak = max(peak, drip.active)
                assert time.monotonic() < deadline, (
                    f"import B did not finish: {snapshot(runtime, b).counters}"
                )
                time.sleep(0.05)
            assert snapshot(runtime, b).counters.imported == 20
            assert peak <= pool.per_import == 3  # A never held more than its share
            assert snapshot(runtime, a).counters.pending == 12  # still dripping, untouched
        finally:
            pool.stop(grace=0)
            queue.close()
            runtime.close()
    # Stopping interrupted A's downloads: handed back, not failed.
    assert _states(settings.effective_database_url, a) == {
        d.name: ("pending", 0, None) for d in drips
    }


# -- stopping ----------------------------------------------------------------------------------

GRACE = 1.0
# What SIGTERM may take: the grace, the stop bound, a pull and the process's own exit; for
# serve, first uvicorn's time for open connections.
STOP_LIMIT = 5 * (GRACE + STOP_BOUND_SECONDS + 1)
SERVE_STOP_LIMIT = 5 * (HTTP_SHUTDOWN_SECONDS + GRACE + STOP_BOUND_SECONDS + 1)
# uvicorn ends by raising the signal it caught again, once shut down.
SERVE_EXIT_CODES = (0, -signal.SIGTERM)


def _env(route: Route, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    return (
        env
        | route.env
        | {
            "DATA_DIR": str(tmp_path / "data"),
            "SHUTDOWN_GRACE_SECONDS": str(GRACE),
            # The drips must still be running when SIGTERM comes.
            "DOWNLOAD_MIN_BYTES_PER_SECOND": "0",
            "CONCURRENCY": "4",
            "PYTHONUNBUFFERED": "1",
        }
        | extra
    )


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "imageimport", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def _stop(
    process: subprocess.Popen[bytes], log: Path, limit: float, codes: tuple[int, ...]
) -> None:
    """SIGTERM; the process must exit within `limit` seconds (it is killed otherwise)."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"no exit within {limit} s of SIGTERM:\n{log.read_text()[-3000:]}")
    assert code in codes, log.read_text()[-3000:]


def _follow_events(url: str) -> threading.Thread:
    """What the page does while an import runs: keep its event stream open."""

    def follow() -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("GET", url, headers=AUTH, timeout=None) as stream,
        ):
            for _ in stream.iter_lines():
                pass

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def _states(database: str, import_id: str) -> dict[str, tuple[str, int, str | None]]:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(ImportItem.name, ImportItem.state, ImportItem.attempts, ImportItem.reason)
                .where(ImportItem.import_id == import_id)
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return {name: (state, attempts, reason) for name, state, attempts, reason in rows}


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = _start(["serve", "--port", str(port)], env, log)
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}/healthz", process, log), 60, "serve")
    return process


def _healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    assert process.poll() is None, log.read_text()[-3000:]
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.timeout(300)
def test_serve_stops_soon_after_sigterm_and_keeps_dripping_files_pending(tmp_path: Path) -> None:
    drips = [picture(f"drip-{n}.jpg", 200 + n) for n in range(6)]
    fine = [picture(f"fine-{n}.jpg", 300 + n) for n in range(3)]
    # Listed (and queued) first: done before the drips take the slots.
    with dripping("gdrive-api", FakeFolder("Slow", [*fine, *drips]), drips, 2.0) as (
        route,
        drip,
    ):
        env = _env(route, tmp_path, API_TOKEN=API_TOKEN)
        port = free_port()
        log = tmp_path / "serve.log"
        serve = _serve(env, port, log)
        try:
            base = f"http://127.0.0.1:{port}/api/v1/imports"
            answer = httpx.post(base, json={"url": route.url}, headers=AUTH, timeout=30)
            assert answer.status_code == 202, answer.text
            import_id = answer.json()["id"]
            database = f"sqlite:///{tmp_path / 'data' / 'imageimport.db'}"
            done = lambda: sum(s == "done" for s, _, _ in _states(database, import_id).values())  # noqa: E731
            wait_for(lambda: drip.active >= 3 and done() == 3, 60, "the drips to be in flight")

            events = _follow_events(f"{base}/{import_id}/events")
            wait_for(lambda: '/events HTTP/1.1" 200' in log.read_text(), 30, "the event stream")
            _stop(serve, log, SERVE_STOP_LIMIT, SERVE_EXIT_CODES)
            assert "interrupting 3 file(s) still in progress" in log.read_text()
            events.join(30)
            assert not events.is_alive()
            states = _states(database, import_id)
            assert {n: states[n] for n in states if n.startswith("fine")} == {
                f.name: ("done", 0, None) for f in fine
            }
            # Interrupted by the stop: neither failed nor counted as an attempt.
            assert {n: states[n] for n in states if n.startswith("drip")} == {
                d.name: ("pending", 0, None) for d in drips
            }

            # The next start picks them up again.
            before = sum(drip.started.values())
            serve = _serve(env, port, log)
            wait_for(lambda: sum(drip.started.values()) >= before + 3, 60, "a second delivery")
            _stop(serve, log, SERVE_STOP_LIMIT, SERVE_EXIT_CODES)
            assert {s for s, _, _ in _states(database, import_id).values()} == {"done", "pending"}
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()


@pytest.mark.timeout(300)
def test_worker_stops_soon_after_sigterm_and_hands_dripping_files_back(
    nats_server: Any, tmp_path: Path
) -> None:
    purge_stream(nats_server.url)
    drips = [picture(f"drip-{n}.jpg", 400 + n) for n in range(6)]
    with dripping("gdrive-api", FakeFolder("Slow", drips), drips, 2.0) as (route, drip):
        database = f"sqlite:///{tmp_path / 'shared.db'}"
        env = _env(
            route,
            tmp_path,
            DATABASE_URL=database,
            NATS_URL=nats_server.url,
            NATS_ACK_WAIT_SECONDS="30",
            HEALTH_PORT=str(free_port()),
        )
        planned = run_imageimport(
            "import", "--detach", route.url, env=env, cwd=tmp_path, timeout=60
        )
        assert planned.returncode == 0, planned.stderr
        import_id = planned.stdout.strip().splitlines()[-1]
        log = tmp_path / "worker.log"
        worker = _start(["worker", "--concurrency", "4"], env, log)
        try:
            wait_for(lambda: drip.active >= 3, 60, "the drips to be in flight")
            _stop(worker, log, STOP_LIMIT, (0,))
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert re.search(r"interrupting \d file\(s\) still in progress", log.read_text())
        assert _states(database, import_id) == {d.name: ("pending", 0, None) for d in drips}
        # Every file is still queued, and the interrupted ones were not counted as a delivery.
        queue = NatsQueue(nats_server.url, max_deliver=10)
        try:
            deliveries = []
            deadline = time.monotonic() + 30
            while len(deliveries) < len(drips) and time.monotonic() < deadline:
                deliveries += queue.pull(10, timeout=1)
            assert sorted(d.job.remote_id for d in deliveries) == sorted(d.id for d in drips)
            assert [d.attempt for d in deliveries] == [1] * len(drips)
            for delivery in deliveries:
                delivery.ack()
        finally:
            queue.close()
