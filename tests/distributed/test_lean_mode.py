"""Lean mode through the API in the distributed mode (PostgreSQL, NATS JetStream, SeaweedFS,
a worker process): the headers' metadata equal to what full mode records for the same files,
no thumbnail stored by the import, each thumbnail made on its first request then stored and
served, and damaged pixels found then marking the image corrupt."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import select

from imageimport.api import create_app
from imageimport.db.models import Image, Import
from imageimport.settings import Settings
from tests.api.conftest import TEST_CLIENT_HOSTS, wait_for
from tests.distributed.cluster import Cluster, purge_stream
from tests.distributed.test_distributed import stored_keys
from tests.fakes.folder import FakeFolder, lean_folder
from tests.pipeline.routes import start_route

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.nats, pytest.mark.timeout(420)]

# The same files twice, in two folders: one imported in full, the other in lean mode.
FULL = lean_folder("full")
LEAN = lean_folder("lean")
ROOT = FakeFolder("Lean against full", [FULL.folder, LEAN.folder])
HEADER_FIELDS = ("format", "content_type", "width", "height", "taken_at", "camera", "size")


def folder_url(folder: FakeFolder) -> str:
    return f"https://drive.google.com/drive/folders/{folder.id}?usp=sharing"


def imported(client: TestClient, folder: FakeFolder, mode: str) -> dict[str, Any]:
    response = client.post(
        "/api/v1/imports", json={"url": folder_url(folder), "options": {"mode": mode}}
    )
    assert response.status_code == 202, response.text
    done = wait_for(client, response.json()["id"], timeout=180)
    assert done["state"] in ("succeeded", "completed_with_failures"), done
    return done


def images_of(client: TestClient, import_id: str) -> dict[str, dict[str, Any]]:
    page = client.get("/api/v1/images", params={"import_id": import_id, "limit": 50}).json()
    return {image["path"]: image for image in page["items"]}


def test_a_lean_import_through_the_api(
    tmp_path: Path,
    postgres_database: str,
    nats_server: Any,
    s3_server: Any,
    make_settings: Callable[..., Settings],
) -> None:
    purge_stream(nats_server.url)
    with start_route("gdrive-api", ROOT) as route:
        cluster = Cluster(tmp_path, postgres_database, nats_server.url, s3_server, route.env)
        settings = make_settings(
            database_url=postgres_database,
            nats_url=nats_server.url,
            s3_bucket=cluster.env["S3_BUCKET"],
            s3_endpoint_url=s3_server.endpoint_url,
            s3_access_key_id=s3_server.access_key,
            s3_secret_access_key=s3_server.secret_key,
            allowed_hosts=TEST_CLIENT_HOSTS,
            allow_anonymous=True,
            **route.settings,
        )
        try:
            cluster.start_worker(concurrency=4)
            with TestClient(create_app(settings, local_workers=False)) as client:
                _check(client, cluster, s3_server)
        finally:
            cluster.stop()


def _check(client: TestClient, cluster: Cluster, s3: Any) -> None:
    # Full mode first: what it records, then its images deleted, so that the lean import of
    # the same bytes stores them anew instead of finding them stored.
    full = imported(client, FULL.folder, "full")
    assert full["counters"]["imported"] == len(FULL.good)
    assert full["counters"]["failed"] == len(FULL.corrupt)
    recorded = images_of(client, full["id"])
    assert set(recorded) == FULL.good
    for image in recorded.values():
        assert image["state"] == "ready"
        assert client.delete(image["links"]["self"]).status_code == 204
    assert stored_keys(cluster, s3) == []

    lean = imported(client, LEAN.folder, "lean")
    assert lean["state"] == "succeeded"
    assert lean["counters"]["imported"] == len(LEAN.good) + len(LEAN.corrupt)
    with cluster.engine.connect() as connection:
        options = connection.scalar(select(Import.options).where(Import.id == lean["id"]))
    assert options == {"mode": "lean"}
    images = images_of(client, lean["id"])
    assert set(images) == LEAN.good | LEAN.corrupt
    for path, image in images.items():
        assert image["state"] == "unverified", path
    for path in LEAN.good:
        got = {field: images[path][field] for field in HEADER_FIELDS}
        assert got == {field: recorded[path][field] for field in HEADER_FIELDS}, path
    originals = sorted(image.object_key for image in _rows(cluster))
    assert sorted(stored_keys(cluster, s3)) == originals  # no thumbnail yet

    # The first request makes the thumbnail, stores it, and serves it as any other.
    for path in sorted(LEAN.good):
        link = images[path]["links"]["thumbnail"]
        response = client.get(link, follow_redirects=False)
        assert response.status_code == 307, (path, response.text)
        fetched = httpx.get(response.headers["location"], timeout=30)
        assert fetched.status_code == 200
        with PILImage.open(io.BytesIO(fetched.content)) as picture:
            assert picture.format == "WEBP"
            assert max(picture.size) == min(400, max(images[path]["width"], images[path]["height"]))
        assert client.get(images[path]["links"]["self"]).json()["state"] == "ready"
        # Asked again: served from the store, the same object.
        again = client.get(link, follow_redirects=False)
        assert again.status_code == 307
        assert httpx.get(again.headers["location"], timeout=30).content == fetched.content

    # Header fine, pixels cut short: found corrupt, shown as such, never an error.
    for path in sorted(LEAN.corrupt):
        for _ in range(2):
            response = client.get(images[path]["links"]["thumbnail"], follow_redirects=False)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("image/svg+xml")
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-image-state"] == "corrupt"
        assert client.get(images[path]["links"]["self"]).json()["state"] == "corrupt"

    thumbs = sorted(image.thumbnail_key for image in _rows(cluster) if image.path in LEAN.good)
    assert sorted(stored_keys(cluster, s3)) == sorted(originals + thumbs)


def _rows(cluster: Cluster) -> list[Any]:
    with cluster.engine.connect() as connection:
        return list(connection.execute(select(Image.path, Image.object_key, Image.thumbnail_key)))
