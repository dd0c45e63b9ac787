"""The REST API in Kubernetes mode against the Kubernetes emulator: POST /api/v1/imports
creates an ImageImport in the API's namespace, and the operator lists that same import."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from imageimport.api import create_app
from imageimport.db.models import Import
from imageimport.operator.handlers import OperatorContext
from imageimport.queue.memory import MemoryQueue
from imageimport.services.credentials import CredentialedRuntime
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from tests.api.conftest import TEST_CLIENT_HOSTS, assert_problem
from tests.fakes.folder import big_folder
from tests.operator.kube import RESOURCE, KubeHarness
from tests.pipeline.routes import start_route

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

NAMESPACE = "gallery"
FOLDER = big_folder(7, seed=61, name="api-kube")


@pytest.fixture
def drive() -> Iterator[Any]:
    with start_route("gdrive-api", FOLDER) as route:
        yield route


@pytest.fixture
def settings(
    postgres_database: str, drive: Any, make_settings: Callable[..., Settings]
) -> Settings:
    # The chart's API has a token; here anonymous changes stand in for it.
    return make_settings(
        database_url=postgres_database,
        IMAGEIMPORT_MODE="kubernetes",
        allowed_hosts=TEST_CLIENT_HOSTS,
        allow_anonymous=True,
        **drive.settings,
    )


@pytest.fixture
def api(
    kube: KubeHarness, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    # The API finds its cluster and namespace as in a pod: a kubeconfig and POD_NAMESPACE.
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    with TestClient(create_app(settings, local_workers=False)) as client:
        yield client


def imports(settings: Settings) -> list[tuple[str, str | None, str]]:
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as connection:
            return [
                (r.id, r.external_id, r.state)
                for r in connection.execute(select(Import.id, Import.external_id, Import.state))
            ]
    finally:
        engine.dispose()


def test_post_creates_an_imageimport_that_the_operator_lists(
    api: TestClient, kube: KubeHarness, settings: Settings, drive: Any
) -> None:
    response = api.post(
        "/api/v1/imports", json={"url": drive.url, "options": {"deleteImagesOnRemoval": True}}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "pending"
    assert response.headers["Location"] == f"/api/v1/imports/{body['id']}"

    [resource] = kube.objects(RESOURCE)
    meta = resource["metadata"]
    assert meta["namespace"] == NAMESPACE
    assert meta["name"].startswith("import-")
    assert resource["spec"] == {
        "source": {"url": drive.url},
        "options": {"deleteImagesOnRemoval": True},
    }
    assert imports(settings) == [(body["id"], meta["uid"], "pending")]

    # The operator finds the import the API recorded and lists it: still one import.
    runtime = CredentialedRuntime(settings)
    importer = Importer(runtime, MemoryQueue())
    try:
        kube.start_operator(kopf.Memo(context=OperatorContext(runtime, importer)), [NAMESPACE], 0.3)
        deadline = time.monotonic() + 30
        while True:
            status = (kube.get(NAMESPACE, meta["name"]) or {}).get("status", {})
            if status.get("phase") == "Importing" and status["counters"]["discovered"] == 7:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    finally:
        kube.stop_operators()
        importer.wait(30)
        runtime.close()
    assert status["importId"] == body["id"]
    assert [(i, uid) for i, uid, _ in imports(settings)] == [(body["id"], meta["uid"])]
    listed = api.get(f"/api/v1/imports/{body['id']}").json()
    assert (listed["state"], listed["counters"]["discovered"]) == ("importing", 7)


def test_what_cannot_be_imported_is_refused_before_any_resource_exists(
    api: TestClient, kube: KubeHarness, settings: Settings, drive: Any
) -> None:
    unknown = api.post("/api/v1/imports", json={"url": drive.url, "options": {"speed": "max"}})
    problem = assert_problem(unknown, 422, "invalid-options")
    assert problem["detail"].startswith("Unknown option(s) speed: in Kubernetes mode")

    unsupported = api.post(
        "/api/v1/imports", json={"url": drive.url, "options": {"recursive": False}}
    )
    assert_problem(unsupported, 422, "invalid-options")

    above_the_limit = settings.max_file_size_bytes + 1
    too_large = api.post(
        "/api/v1/imports",
        json={"url": drive.url, "options": {"maxFileSizeBytes": above_the_limit}},
    )
    problem = assert_problem(too_large, 422, "invalid-options")
    assert problem["detail"].startswith(f"spec.options.maxFileSizeBytes is {above_the_limit}, ")

    bad_link = api.post("/api/v1/imports", json={"url": "https://example.com/photos"})
    assert_problem(bad_link, 422, "invalid-url")

    assert kube.objects(RESOURCE) == []
    assert imports(settings) == []


def test_a_lower_file_size_limit_becomes_the_resources_and_the_imports(
    api: TestClient, kube: KubeHarness, settings: Settings, drive: Any
) -> None:
    response = api.post(
        "/api/v1/imports", json={"url": drive.url, "options": {"maxFileSizeBytes": 1000}}
    )
    assert response.status_code == 202, response.text
    [resource] = kube.objects(RESOURCE)
    assert resource["spec"]["options"] == {"maxFileSizeBytes": 1000}
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as connection:
            options = connection.scalar(select(Import.options))
    finally:
        engine.dispose()
    assert options["maxFileSizeBytes"] == 1000


def test_a_cluster_without_the_crd_is_a_clear_503(
    api: TestClient, kube: KubeHarness, settings: Settings, drive: Any
) -> None:
    kube.emulator.uninstalled = frozenset({"imageimports"})
    response = api.post("/api/v1/imports", json={"url": drive.url})
    problem = assert_problem(response, 503, "service-unavailable")
    assert problem["detail"] == (
        "The ImageImport resource is not installed in this cluster (the CRD "
        "imageimports.imageimport.dev is missing)."
    )
    assert imports(settings) == []


def test_without_a_namespace_the_api_says_what_to_set(
    kube: KubeHarness, settings: Settings, drive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with TestClient(create_app(settings, local_workers=False)) as client:
        response = client.post("/api/v1/imports", json={"url": drive.url})
    problem = assert_problem(response, 503, "service-unavailable")
    assert "set POD_NAMESPACE" in problem["detail"]
    assert kube.objects(RESOURCE) == []
