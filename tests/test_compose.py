"""compose.yaml matches the code: settings it sets exist and validate, the commands it runs
exist, and the services wait for what they need. (Docker itself is not needed.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from imageimport.cli import app
from imageimport.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def setting_names() -> set[str]:
    """Every environment variable Settings reads: field names, or their alias when aliased."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else name.upper())
    return names


def image_entrypoint() -> list[str]:
    """The final stage's ENTRYPOINT (exec form) of the image compose builds."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert lines, "the Dockerfile has no ENTRYPOINT"
    entrypoint = json.loads(lines[-1].removeprefix("ENTRYPOINT"))
    assert isinstance(entrypoint, list)
    return entrypoint


def interpolate(value: Any) -> str:
    """Compose's `${NAME:-default}` as it comes out in a shell that does not set NAME."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def app_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    environment = compose["services"][service]["environment"]
    assert isinstance(environment, dict), f"{service}: environment must be a mapping"
    return {key: interpolate(value) for key, value in environment.items()}


def test_app_services_build_this_repository(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "nats", "minio", *APP_SERVICES}
    for name in APP_SERVICES:
        assert services[name]["build"] == ".", name


def test_app_services_set_only_known_settings_from_one_anchor(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = {key: interpolate(value) for key, value in compose["x-imageimport-env"].items()}
    known = setting_names()
    assert set(shared) <= known, set(shared) - known
    for name in APP_SERVICES:
        env = app_env(compose, name)
        assert set(env) <= known, (name, set(env) - known)
        assert {k: env[k] for k in shared} == shared, f"{name} does not use x-imageimport-env"

    # The values validate as Settings would read them inside the containers.
    for key in known:
        monkeypatch.delenv(key, raising=False)
    for key, value in app_env(compose, "worker").items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.nats_url and settings.s3_bucket and settings.s3_create_bucket
    # Unset credentials arrive as empty strings, which select the public routes.
    assert not settings.google_api_key
    assert settings.health_port == 8081


def test_settings_point_at_the_services_with_their_credentials(compose: dict[str, Any]) -> None:
    services, env = compose["services"], app_env(compose, "api")
    database = make_url(env["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.host == "postgres"
    assert (database.username, database.password, database.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    minio = services["minio"]["environment"]
    assert env["S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["S3_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter ones


def test_services_start_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "nats": {"condition": "service_healthy"},
            "minio": {"condition": "service_healthy"},
        }, name
    for name in ("postgres", "nats", "minio", "api", "worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


def test_nats_runs_jetstream_with_storage_and_monitoring(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    command = nats["command"]
    assert nats["image"].startswith("nats:2")
    assert "-js" in command
    assert command[command.index("-sd") + 1] == "/data"
    monitor_port = command[command.index("-m") + 1]
    assert f":{monitor_port}/healthz" in " ".join(nats["healthcheck"]["test"])


def test_workers_scale_and_expose_their_health(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "ports" not in worker  # a published port would stop `--scale`
    port = app_env(compose, "worker")["HEALTH_PORT"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    api = compose["services"]["api"]
    # Published on loopback only: that is what lets it allow anonymous changes by default.
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert app_env(compose, "api")["ALLOW_ANONYMOUS"] == "true"
    assert "127.0.0.1:8000/readyz" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_exist_with_their_options(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    argv = [*spec.get("entrypoint", image_entrypoint()), *spec["command"]]
    assert argv[0] == "imageimport", argv
    # Options are parsed before --help runs: an unknown one fails here.
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_an_unknown_command_would_be_caught() -> None:
    """The check above can fail: a command or option the CLI lacks exits non-zero."""
    assert CliRunner().invoke(app, ["no-such-command", "--help"]).exit_code != 0
    assert CliRunner().invoke(app, ["api", "--no-such-option", "1", "--help"]).exit_code != 0
