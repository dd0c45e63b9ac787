"""POST /api/v1/imports/{id}/sync: a finished import's folder listed again into the same
import, against the fake Drive, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.settings import Settings
from tests.api.conftest import GOOD, SAMPLE, assert_problem, import_folder, start_import, wait_for
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import RunningServer
from tests.pipeline.routes import API_KEY

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_a_sync_imports_what_changed_into_the_same_import_and_prunes_what_is_gone(
    api_settings: Callable[..., Settings],
) -> None:
    folder = FakeFolder(
        "Synced",
        [
            FakeFile("one.png", make_image(40, 30, "PNG", seed=931), "image/png"),
            FakeFile("two.jpg", make_image(50, 20, "JPEG", seed=932), "image/jpeg"),
            FakeFile("three.webp", make_image(24, 24, "WEBP", seed=933), "image/webp"),
        ],
    )
    files = dict(folder.files())
    with RunningServer(make_gdrive_app([folder], api_key=API_KEY)) as server:
        fake = server.app.app.state.drive  # type: ignore[attr-defined]
        settings = api_settings(
            gdrive_api_url=server.url, gdrive_web_url=server.url, gdrive_download_url=server.url
        )
        with TestClient(create_app(settings)) as client:
            first = import_folder(client, folder)
            assert first["state"] == "succeeded" and first["last_sync"] is None
            assert first["counters"]["gone"] == 0
            files["two.jpg"].overwrite(make_image(51, 20, "JPEG", seed=934))
            fake.add(folder, FakeFile("four.png", make_image(20, 20, "PNG", seed=935)))
            fake.remove(files["three.webp"])
            three = client.get(f"/api/v1/imports/{first['id']}/items").json()["items"][2]
            assert three["path"] == "three.webp"
            digest = client.get(f"/api/v1/images/{three['image_id']}").json()["sha256"]

            response = client.post(f"/api/v1/imports/{first['id']}/sync", json={"prune": True})
            assert response.status_code == 202, response.text
            started = response.json()
            assert started["id"] == first["id"]
            assert started["state"] in ("listing", "importing", "succeeded")
            assert started["last_sync"]["round"] == 1
            assert started["last_sync"]["trigger"] == "api" and started["last_sync"]["prune"]

            synced = wait_for(client, first["id"])
            assert synced["state"] == "succeeded", synced
            counters = synced["counters"]
            assert (counters["discovered"], counters["imported"], counters["gone"]) == (3, 3, 1)
            last = synced["last_sync"]
            assert last["finished_at"] is not None and last["listed_at"] is not None
            tally = [last[k] for k in ("added", "changed", "unchanged", "gone", "pruned")]
            assert tally == [1, 1, 1, 1, 1]
            gone = client.get(f"/api/v1/imports/{first['id']}/items", params={"state": "gone"})
            assert [i["path"] for i in gone.json()["items"]] == ["three.webp"]
            # By digest: SQLite gives a deleted image's id to the next one.
            stored = client.get("/api/v1/images").json()["items"]
            assert len(stored) == 4 and digest not in {i["sha256"] for i in stored}
            # The list of imports shows the last round too.
            listed = client.get("/api/v1/imports").json()["items"]
            assert [i["last_sync"] for i in listed if i["id"] == first["id"]] == [last]

            # Without a body: no pruning; nothing changed since.
            response = client.post(f"/api/v1/imports/{first['id']}/sync")
            assert response.status_code == 202, response.text
            again = wait_for(client, first["id"])
            last = again["last_sync"]
            assert (last["round"], last["prune"]) == (2, False)
            assert [last[k] for k in ("added", "changed", "unchanged", "gone")] == [0, 0, 3, 0]


def test_one_round_at_a_time_and_only_of_a_finished_import(
    api_settings: Callable[..., Settings],
) -> None:
    # Without workers nothing is processed, so the import waits in "importing" for us.
    with TestClient(create_app(api_settings(), local_workers=False)) as client:
        started = start_import(client, SAMPLE)
        wait_for(client, started["id"], {"importing"})
        problem = assert_problem(
            client.post(f"/api/v1/imports/{started['id']}/sync"), 409, "sync-refused"
        )
        assert problem["state"] == "importing"
        assert "still running" in problem["detail"]

        assert client.post(f"/api/v1/imports/{started['id']}/cancel").status_code == 200
        response = client.post(f"/api/v1/imports/{started['id']}/sync", json={})
        assert response.status_code == 202, response.text
        # Its files wait again, for workers that never come: the round runs.
        wait_for(client, started["id"], {"importing"})
        problem = assert_problem(
            client.post(f"/api/v1/imports/{started['id']}/sync", json={"prune": True}),
            409,
            "sync-refused",
        )
        assert problem["state"] == "importing"


def test_syncing_an_unknown_import_or_with_a_bad_body_is_a_problem(client: TestClient) -> None:
    assert_problem(client.post(f"/api/v1/imports/{UNKNOWN}/sync"), 404, "not-found")
    assert_problem(client.post("/api/v1/imports/not-an-id/sync"), 404, "not-found")
    good = import_folder(client, GOOD)
    for body in ({"prune": "sometimes"}, {"prune": True, "schedule": "hourly"}, []):
        assert_problem(
            client.post(f"/api/v1/imports/{good['id']}/sync", json=body), 422, "validation-error"
        )
