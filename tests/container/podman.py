"""Podman for the image tests: whether it can run here, a configuration of our own, and the
images the tests need, built without a registry.

The project's Dockerfile starts FROM python:3.11-slim; no registry is assumed reachable, so a
stand-in is built locally: a Debian bookworm rootfs from `debootstrap` (cached as a tarball
under ~/.cache/imageimport-container/), imported into podman, then python-base.Dockerfile on
top. Both base images are tagged by a hash of what they are made of, so later runs find them
in podman's storage (and rebuild them when missing). The project image is built from scratch
on every run, under a tag of its own, and removed at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON_BASE_DOCKERFILE = HERE / "python-base.Dockerfile"

REQUIRED_TOOLS = ("podman", "runc", "debootstrap")
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Where HTTPS goes through an intercepting proxy, its CA is in the host's bundle only: the
# build's pip sees it through a read-only bind mount (the image keeps Debian's own bundle).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# crun fails on hosts with hybrid cgroups, and podman's default ulimits exceed what some
# hosts allow: runc, cgroupfs and modest limits work everywhere the tests were tried.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def unavailable_reason() -> str | None:
    """Why the container tests cannot run on this machine, or None when they can."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"container tests need {', '.join(missing)} on PATH "
            "(apt-get install podman runc debootstrap) and root"
        )
    if os.geteuid() != 0:
        return "container tests need root (rootful podman with runc; debootstrap)"
    return None


def install_tools() -> str | None:
    """As root on Debian, installs what is missing (as the page tests install Chromium), so a
    fresh machine runs these tests instead of skipping them. An error sentence, or None."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *REQUIRED_TOOLS]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(argv)}` failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
    return None


class PodmanError(AssertionError):
    pass


class Podman:
    """The podman command with our containers.conf, and the containers and images this test
    session made, removed by name at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        conf = workdir / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = os.environ | {"CONTAINERS_CONF": str(conf)}
        self.run_id = uuid.uuid4().hex[:10]
        self.containers: list[str] = []
        self.images: list[str] = []

    def __call__(
        self, *args: str | Path, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = ["podman", *map(str, args)]
        done = subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise PodmanError(
                f"{' '.join(command)} exited with {done.returncode}\n"
                f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        return done

    def popen(self, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(
                ["podman", *map(str, args)], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def container_name(self, role: str) -> str:
        """A name for a container of this session; it is removed at the end whatever happens."""
        name = f"imageimport-test-{self.run_id}-{role}-{len(self.containers)}"
        self.containers.append(name)
        return name

    def image_exists(self, reference: str) -> bool:
        return self("image", "exists", reference, check=False).returncode == 0

    def inspect(self, reference: str) -> dict[str, Any]:
        return json.loads(self("image", "inspect", reference).stdout)[0]

    def cleanup(self) -> None:
        # No grace (--time 0): the tests that care how a container stops stop it themselves,
        # and waiting out each one's grace here cost the suite 15 s.
        if self.containers:
            self(
                "rm",
                "--force",
                "--ignore",
                "--time",
                "0",
                *self.containers,
                check=False,
                timeout=60,
            )
        if self.images:
            self("rmi", "--force", "--ignore", *self.images, check=False, timeout=60)


# -- base images --------------------------------------------------------------------------------


def _append(log: Path, text: str) -> None:
    with log.open("a") as out:
        out.write(text)


def cache_dir() -> Path:
    path = Path.home() / ".cache" / "imageimport-container"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def rootfs_key() -> str:
    recipe = {
        "tool": "debootstrap",
        "variant": "minbase",
        "suite": DEBIAN_SUITE,
        "mirror": DEBIAN_MIRROR,
        "arch": platform.machine(),
    }
    return _digest(json.dumps(recipe, sort_keys=True))


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One test session at a time builds the cached bases."""
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _unmount_under(path: Path) -> None:
    """debootstrap mounts /proc and /sys inside its target; a failed run may leave them, and
    removing the tree must not walk into the host's."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts]
    prefix = str(path.resolve()) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)


def debian_rootfs(cache: Path, log: Path) -> Path:
    """A tarball of a minimal Debian rootfs, made by debootstrap once and kept in the cache."""
    tarball = cache / f"debian-{DEBIAN_SUITE}-minbase-{rootfs_key()}.tar"
    if tarball.is_file():
        return tarball
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        rootfs = work / "rootfs"
        with open(log, "ab") as out:
            steps: Sequence[list[str]] = (
                ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
                ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(work / "rootfs.tar"), "."],
            )
            for step in steps:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=900)
                if done.returncode != 0:
                    raise PodmanError(f"{step[0]} exited with {done.returncode}; see {log}")
        os.replace(work / "rootfs.tar", tarball)
    finally:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def python_base_image(podman: Podman, log: Path) -> str:
    """localhost/imageimport-test-python:<hash>, made when missing: the debootstrap rootfs
    imported into podman, then python-base.Dockerfile on top."""
    cache = cache_dir()
    key = rootfs_key()
    debian = f"localhost/imageimport-test-debian:{key}"
    recipe = PYTHON_BASE_DOCKERFILE.read_bytes()
    python = f"localhost/imageimport-test-python:{_digest(key, recipe)}"
    with cache_lock(cache):
        if podman.image_exists(python):
            return python
        if not podman.image_exists(debian):
            podman("import", debian_rootfs(cache, log), debian, timeout=300)
        empty = podman.workdir / "python-base-context"
        empty.mkdir(exist_ok=True)
        built = podman(
            "build",
            "--pull=never",
            "--build-arg",
            f"BASE={debian}",
            "--file",
            PYTHON_BASE_DOCKERFILE,
            "--tag",
            python,
            empty,
            timeout=900,
        )
        _append(log, built.stdout + built.stderr)
    return python


# -- the project image --------------------------------------------------------------------------


def build_context(destination: Path) -> Path:
    """A copy of the files git knows (tracked, or new and not ignored): what `docker build .`
    sees in a clean checkout. The Dockerfile and .dockerignore come along, so podman applies
    the same exclusions a real build does. Outside a git checkout: the repository itself."""
    if shutil.which("git") is None:
        return REPO
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listing.returncode != 0:
        return REPO
    listed = listing.stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def build_project_image(podman: Podman, python_image: str, log: Path) -> str:
    """The project's Dockerfile, built afresh (no cached layers) under a tag of this run."""
    tag = f"localhost/imageimport-test:{podman.run_id}"
    context = build_context(podman.workdir / "context")
    args: list[str | Path] = [
        "build",
        "--pull=never",
        "--layers=false",  # every step runs: a change on PyPI or in the base shows up here
        "--build-arg",
        f"PYTHON_IMAGE={python_image}",
        "--tag",
        tag,
    ]
    if HOST_CA_BUNDLE.is_file():
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    podman.images.append(tag)
    started = time.monotonic()
    built = podman(*args, context, timeout=900)
    took = time.monotonic() - started
    _append(log, f"{built.stdout}{built.stderr}\nbuilt {tag} in {took:.0f} s\n")
    return tag
