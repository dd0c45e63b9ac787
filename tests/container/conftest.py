"""The project image, built once per session with podman (see podman.py).

CONTAINER_TEST_IMAGE=<reference> runs the tests against an image already in podman's storage
instead (one built elsewhere, or a deliberately broken variant to see the tests catch it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.podman import (
    Podman,
    build_project_image,
    install_tools,
    python_base_image,
    unavailable_reason,
)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """podman with a configuration of our own; removes this session's containers and images."""
    failure = install_tools()
    if failure:
        pytest.fail(failure)
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    session = Podman(tmp_path_factory.mktemp("podman"))
    try:
        yield session
    finally:
        session.cleanup()


@pytest.fixture(scope="session")
def build_log(podman: Podman) -> Path:
    return podman.workdir / "build.log"


@pytest.fixture(scope="session")
def image(podman: Podman, build_log: Path) -> str:
    """The tag of the project image, built from the repository's Dockerfile on this run."""
    given = os.environ.get("CONTAINER_TEST_IMAGE")
    if given:
        return given
    python = python_base_image(podman, build_log)
    return build_project_image(podman, python, build_log)
