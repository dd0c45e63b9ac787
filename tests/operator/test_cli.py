"""`imageimport operator` refuses settings and options it cannot work with, in a sentence, and
waits for PostgreSQL and NATS when they are not up yet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageimport.cli import app

BASE_ENV = {
    "DATABASE_URL": "postgresql://imageimport@db.invalid/imageimport",
    "NATS_URL": "nats://nats.invalid:4222",
    "POD_NAMESPACE": "",
    "KUBECONFIG": "/nonexistent/kubeconfig",
}


def run(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["operator", *args], env={**BASE_ENV, **env})
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--namespace", "photos"],
            {"NATS_URL": ""},
            "The operator needs NATS_URL: it publishes each file for `imageimport worker` "
            "processes through NATS JetStream.",
        ),
        (
            ["--namespace", "photos"],
            {"DATABASE_URL": "sqlite:///data/imageimport.db"},
            "The operator needs DATABASE_URL to name a PostgreSQL database: the API, the workers "
            "and the operator run in different pods and must share it (SQLite cannot be shared).",
        ),
        (
            ["--namespace", "photos", "--all-namespaces"],
            {},
            "Give either --namespace or --all-namespaces, not both.",
        ),
        (
            ["--namespace", "photos", "--standalone", "--peering", "imageimport"],
            {},
            "--standalone turns peering off; it cannot go with --peering.",
        ),
        (
            [],
            {},
            "Which namespaces should the operator serve? Give --namespace NS (repeatable) or "
            "--all-namespaces",
        ),
    ],
)
def test_refusals_are_one_sentence(args: list[str], env: dict[str, str], message: str) -> None:
    code, output = run(*args, **env)
    assert code == 2
    assert output.startswith("Error: " + message), output
    assert "Traceback" not in output


def _operator_process(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "NATS_"))}
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageimport", "operator", "-n", "photos", "--standalone"],
            env=clean | {"KUBECONFIG": "/nonexistent/kubeconfig", "POD_NAMESPACE": ""} | env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def _waits_then_stops(process: subprocess.Popen[bytes], log_path: Path, expected: str) -> str:
    """The operator logs `expected` on each attempt, stays up, and exits 0 on SIGTERM."""
    try:
        deadline = time.monotonic() + 30
        while log_path.read_text().count(expected) < 2:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert "Traceback" not in output
    return output


def test_the_operator_waits_for_its_database_and_says_so(tmp_path: Path) -> None:
    process, log_path = _operator_process(
        tmp_path,
        {
            "DATABASE_URL": "postgresql://imageimport:db-secret-5521@127.0.0.1:1/imageimport",
            "NATS_URL": "nats://127.0.0.1:1",
        },
    )
    output = _waits_then_stops(
        process, log_path, "WARNING imageimport.services.waiting: waiting for the database:"
    )
    assert "db-secret-5521" not in output


@pytest.mark.postgres
def test_the_operator_waits_for_nats_and_says_so(tmp_path: Path, postgres_database: str) -> None:
    process, log_path = _operator_process(
        tmp_path,
        {
            "DATABASE_URL": postgres_database,
            "NATS_URL": "nats://imageimport:nats-secret-7731@127.0.0.1:1",
            "NATS_CONNECT_TIMEOUT_SECONDS": "1",
        },
    )
    expected = (
        "WARNING imageimport.services.waiting: waiting for NATS: Cannot connect to NATS at "
        "nats://***@127.0.0.1:1 within 1 seconds (connection refused); check NATS_URL and "
        "that the NATS server is running and reachable from here."
    )
    output = _waits_then_stops(process, log_path, expected)
    assert "nats-secret-7731" not in output
