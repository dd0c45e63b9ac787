"""Credentials never show: not in logs (DEBUG included, every library's), not in what the
database records (item reasons, import errors), not in API responses, not in CLI output,
on the happy path and on the failure paths (a wrong key, 401s, S3 refusing the secret, a
database that cannot be reached)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import make_url

from imageimport.api import create_app
from imageimport.db.models import Image, Import, ImportItem
from imageimport.runtime import Runtime
from imageimport.settings import Settings, redact_url
from tests.api.conftest import TEST_CLIENT_HOSTS
from tests.commands import run_imageimport
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import (
    DROPBOX_KEY,
    DROPBOX_REFRESH,
    DROPBOX_SECRET,
    GOOGLE_KEY,
    ROUTES,
    SettingsFactory,
    imported,
    serve_route,
)

API_TOKEN = "SECRET-api-token-3e8fd1"
DB_PASSWORD = "SECRET-db-password-77aa0c"
WRONG_GOOGLE_KEY = "AIzaSy-SECRET-wrong-google-key-31c5"
WRONG_DROPBOX_SECRET = "SECRET-wrong-dropbox-secret-a4f0"
WRONG_DROPBOX_REFRESH = "SECRET-wrong-refresh-token-6b2e"
WRONG_S3_SECRET = "SECRET-wrong-s3-secret-key-90de"
SECRETS = [
    GOOGLE_KEY,
    DROPBOX_SECRET,
    DROPBOX_REFRESH,
    API_TOKEN,
    DB_PASSWORD,
    WRONG_GOOGLE_KEY,
    WRONG_DROPBOX_SECRET,
    WRONG_DROPBOX_REFRESH,
    WRONG_S3_SECRET,
    "sl.fake-",  # the prefix of every Dropbox access token the fake hands out
]


def _folder(name: str, seed: int) -> FakeFolder:
    return FakeFolder(
        name,
        [
            FakeFile("one.jpg", make_image(30, 20, "JPEG", seed=seed), "image/jpeg"),
            FakeFile("two.png", make_image(20, 30, "PNG", seed=seed + 1), "image/png"),
            FakeFile("broken.jpg", make_image(40, 40, "JPEG", seed=seed + 2)[:300], "image/jpeg"),
        ],
    )


FOLDER = _folder("Secretive", 401)


def assert_no_secret(text: str, *extra: str) -> None:
    for value in (*SECRETS, *extra):
        assert value not in text, f"{value!r} leaked:\n" + _around(text, value)


def _around(text: str, value: str) -> str:
    at = text.find(value)
    return text[max(0, at - 300) : at + 300]


def recorded(runtime: Runtime) -> str:
    """Every row the import wrote, as text: reasons, errors, names, keys."""
    with runtime.session() as session:
        rows = [
            *session.scalars(select(Import)),
            *session.scalars(select(ImportItem)),
            *session.scalars(select(Image)),
        ]
        return "\n".join(repr(vars(row)) for row in rows)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """DEBUG from every logger, httpx, botocore, urllib3, googleapiclient and the SDK too."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "googleapiclient", "dropbox"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "googleapiclient", "dropbox"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


@pytest.mark.parametrize("name", ROUTES)
def test_every_route_keeps_its_secrets_out_of_logs_and_records(
    name: str, make_settings: SettingsFactory, debug_logs: pytest.LogCaptureFixture
) -> None:
    with serve_route(name, FOLDER) as route:
        # The other provider's credentials too: configured but unused, they must not show
        # either (configuring the same provider's would change the route).
        unused = (
            {"google_api_key": GOOGLE_KEY}
            if name.startswith("dropbox")
            else {
                "dropbox_app_key": DROPBOX_KEY,
                "dropbox_app_secret": DROPBOX_SECRET,
                "dropbox_refresh_token": DROPBOX_REFRESH,
            }
        )
        settings = make_settings(api_token=API_TOKEN, max_deliver=2, **unused, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.counters.imported == 2, result
            assert_no_secret(recorded(runtime) + repr(result))
    assert any(r.levelno == logging.DEBUG for r in debug_logs.records)  # DEBUG was captured
    assert_no_secret(_log_text(debug_logs))


# What each failure path configures (the fakes expect the right credentials), and what it says.
FAILURES: dict[str, tuple[str, dict[str, Any], str]] = {
    "wrong google key": (
        "gdrive-api",
        {"google_key": WRONG_GOOGLE_KEY},
        "The Google API key in GOOGLE_API_KEY is not valid",
    ),
    "wrong dropbox secret": (
        "dropbox-api",
        {"dropbox": (DROPBOX_KEY, WRONG_DROPBOX_SECRET, DROPBOX_REFRESH)},
        "Dropbox rejected the configured app credentials",
    ),
    "wrong dropbox refresh token": (
        "dropbox-api",
        {"dropbox": (DROPBOX_KEY, DROPBOX_SECRET, WRONG_DROPBOX_REFRESH)},
        "Dropbox rejected the configured app credentials",
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_rejected_credentials_are_named_never_shown(
    case: str, make_settings: SettingsFactory, debug_logs: pytest.LogCaptureFixture
) -> None:
    name, credentials, message = FAILURES[case]
    with serve_route(name, FOLDER, **credentials) as route:
        settings = make_settings(source_retry_attempts=2, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert message in (result.error or "")
            assert_no_secret(recorded(runtime))
    assert_no_secret(_log_text(debug_logs))


# A service answering 401/403 with a body that quotes the credentials it was sent.
ECHOES = {
    "gdrive-api": (
        r"alt=media",
        401,
        b'{"error": {"code": 401, "message": "Key %s is not authorised for this file.",'
        b' "errors": [{"reason": "authError", "message": "key %s"}]}}',
    ),
    "dropbox-api": (
        r"^/oauth2/token",
        400,
        b'{"error": "invalid_grant", "error_description": "refresh token %s / secret %s"}',
    ),
}


@pytest.mark.parametrize("name", ECHOES)
def test_error_bodies_that_echo_credentials_are_not_repeated(
    name: str, make_settings: SettingsFactory, debug_logs: pytest.LogCaptureFixture
) -> None:
    pattern, status, body = ECHOES[name]
    values = (GOOGLE_KEY,) * 2 if name == "gdrive-api" else (DROPBOX_REFRESH, DROPBOX_SECRET)
    with serve_route(name, FOLDER) as route:
        route.tap.answer(
            pattern,
            status,
            body % tuple(v.encode() for v in values),
            content_type="application/json",
        )
        settings = make_settings(source_retry_attempts=1, max_deliver=1, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            if name == "gdrive-api":  # listed, then every download refused
                assert result.counters.failed == 3, result
                assert "HTTP 401" in recorded(runtime)
            else:
                assert result.state == "failed"
                assert "Dropbox rejected the configured app credentials" in (result.error or "")
            assert_no_secret(recorded(runtime) + repr(result))
    assert_no_secret(_log_text(debug_logs))


@pytest.fixture
def postgres_with_password(postgres_database: str) -> str:
    # The test server trusts local connections, so any password is accepted: a distinctive
    # one can be configured and looked for.
    return make_url(postgres_database).set(password=DB_PASSWORD).render_as_string(False)


@pytest.mark.timeout(120)
def test_s3_and_database_credentials_stay_out_of_logs_and_records(
    postgres_with_password: str,
    s3_server: Any,
    make_settings: SettingsFactory,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    s3 = {
        "s3_bucket": "secrets-" + os.urandom(4).hex(),
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_access_key_id": s3_server.access_key,
    }
    with serve_route("gdrive-api", FOLDER) as route:
        good = make_settings(
            database_url=postgres_with_password,
            s3_secret_access_key=s3_server.secret_key,
            **s3,
            **route.settings,
        )
        with imported(good, route.url) as (runtime, result):
            assert result.counters.imported == 2, result
            assert_no_secret(recorded(runtime), s3_server.secret_key)
    # S3 refuses a wrong secret: the files fail, saying so, without the secret.
    with serve_route("gdrive-api", _folder("Unstorable", 410)) as route:
        wrong = make_settings(
            database_url=postgres_with_password,
            s3_secret_access_key=WRONG_S3_SECRET,
            **s3,
            **route.settings,
        ).model_copy(update={"s3_bucket": s3["s3_bucket"] + "-w", "max_deliver": 1})
        with imported(wrong, route.url) as (runtime, result):
            assert result.counters.failed == 3, result
            reasons = recorded(runtime)
            assert "access was refused" in reasons
            assert_no_secret(reasons, s3_server.secret_key)
    assert_no_secret(_log_text(debug_logs), s3_server.secret_key)


def test_api_responses_never_carry_credentials(
    make_settings: SettingsFactory, debug_logs: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with serve_route("gdrive-api", FOLDER) as route:
        settings = make_settings(
            api_token=API_TOKEN,
            allowed_hosts=TEST_CLIENT_HOSTS,
            dropbox_app_key=DROPBOX_KEY,
            dropbox_app_secret=DROPBOX_SECRET,
            dropbox_refresh_token=DROPBOX_REFRESH,
            s3_secret_access_key=WRONG_S3_SECRET,  # unused by the local store, still secret
            **route.settings,
        )
        seen: list[str] = []
        with TestClient(create_app(settings)) as client:
            good = _finish(client, route.url, headers)
            # A second import whose listing fails with a body quoting the key.
            route.tap.answer(
                r"^/drive/v3/files",
                400,
                b'{"error": {"code": 400, "message": "API key not valid: %s"}}'
                % GOOGLE_KEY.encode(),
                content_type="application/json",
            )
            bad = _finish(client, route.url, headers)
            assert bad["state"] == "failed"
            paths = [
                "/api/v1/imports",
                f"/api/v1/imports/{good['id']}",
                f"/api/v1/imports/{good['id']}/items",
                f"/api/v1/imports/{good['id']}/events",
                f"/api/v1/imports/{bad['id']}",
                f"/api/v1/imports/{bad['id']}/items",
                f"/api/v1/imports/{bad['id']}/events",
                "/api/v1/images",
                "/healthz",
                "/readyz",
                "/metrics",
                "/openapi.json",
                "/",
            ]
            for image in client.get("/api/v1/images", headers=headers).json()["items"]:
                paths.append(f"/api/v1/images/{image['id']}")
            for path in paths:
                response = client.get(path, headers=headers)
                assert response.status_code < 500, (path, response.text)
                seen.append(f"{path}: {response.headers} {response.text}")
            for wrong in ("", "Bearer ", f"Bearer {API_TOKEN}x", f"Bearer {API_TOKEN[:-1]}"):
                response = client.get("/api/v1/imports", headers={"Authorization": wrong})
                assert response.status_code == 401
                seen.append(f"{response.headers} {response.text}")
    assert_no_secret("\n".join(seen))
    assert_no_secret(_log_text(debug_logs))


def _finish(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    created = client.post("/api/v1/imports", json={"url": url}, headers=headers)
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + 30
    while True:
        body = client.get(f"/api/v1/imports/{created.json()['id']}", headers=headers).json()
        if body["state"] in ("succeeded", "completed_with_failures", "failed", "cancelled"):
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def _clean_env() -> dict[str, str]:
    names = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
    return {k: v for k, v in os.environ.items() if k.upper() not in names}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["gdrive-api", "dropbox-api"])
def test_cli_output_never_shows_credentials(name: str, tmp_path: Path) -> None:
    with serve_route(name, FOLDER) as route:
        env = _clean_env() | route.env | {"API_TOKEN": API_TOKEN, "GOOGLE_API_KEY": GOOGLE_KEY}
        env |= {"DROPBOX_APP_SECRET": DROPBOX_SECRET, "DROPBOX_REFRESH_TOKEN": DROPBOX_REFRESH}
        env["DROPBOX_APP_KEY"] = DROPBOX_KEY
        env["MAX_DELIVER"] = "1"
        done = run_imageimport("-v", "import", route.url, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Corrupt or truncated" in done.stderr
        assert_no_secret(done.stdout + done.stderr)
        listed = run_imageimport("-v", "images", "--json", env=env, cwd=tmp_path)
        assert_no_secret(listed.stdout + listed.stderr)
        # The same with the wrong credentials: refused, by name.
        if name == "gdrive-api":
            env["GOOGLE_API_KEY"] = WRONG_GOOGLE_KEY
        else:
            env["DROPBOX_APP_SECRET"] = WRONG_DROPBOX_SECRET
        refused = run_imageimport("-v", "import", route.url, env=env, cwd=tmp_path)
        assert refused.returncode == 1, refused.stderr[-3000:]
        assert "GOOGLE_API_KEY" in refused.stderr or "DROPBOX_APP_SECRET" in refused.stderr
        assert_no_secret(refused.stdout + refused.stderr)


DRIVE_LINK = "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def test_an_unreachable_database_is_one_sentence_without_its_password(tmp_path: Path) -> None:
    unreachable = f"postgresql://imageimport:{DB_PASSWORD}@127.0.0.1:1/imageimport"
    malformed = f"postgresql://imageimport:{DB_PASSWORD}@127.0.0.1:not-a-port/imageimport"
    for url, command in (
        (unreachable, ["images"]),
        (unreachable, ["import", "--detach", DRIVE_LINK]),
        (malformed, ["migrate"]),
    ):
        env = _clean_env() | {"DATABASE_URL": url, "NATS_URL": "nats://127.0.0.1:1"}
        done = run_imageimport("-v", *command, env=env, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "database" in done.stderr.lower() or "DATABASE_URL" in done.stderr
        assert_no_secret(done.stdout + done.stderr)


def test_settings_errors_name_the_variable_not_its_value(tmp_path: Path) -> None:
    # Short: pydantic abbreviates long values in the middle, which would hide a leak.
    password = "pw-9f2c"
    value = f"ftp://u:{password}@p/"
    with pytest.raises(ValidationError) as invalid:
        Settings(_env_file=None, gdrive_api_url=value)  # type: ignore[call-arg]
    assert_no_secret(str(invalid.value), password)
    env = _clean_env() | {"GDRIVE_API_URL": value, "MAX_FILE_SIZE_BYTES": API_TOKEN}
    done = run_imageimport("images", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "GDRIVE_API_URL" in done.stderr and "MAX_FILE_SIZE_BYTES" in done.stderr
    assert_no_secret(done.stdout + done.stderr, password)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"nats://user:{DB_PASSWORD}@nats.example:4222", "nats://***@nats.example:4222"),
        (f"nats://{API_TOKEN}@nats.example:4222", "nats://***@nats.example:4222"),
        ("nats://nats.example:4222", "nats://nats.example:4222"),
    ],
)
def test_queue_urls_are_shown_without_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
