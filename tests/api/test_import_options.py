"""The options of an import started through the REST API (outside Kubernetes mode): the workers
honour them per import, and anything they would not honour is a 422 before anything starts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import EXPECTED, SAMPLE, Drive, assert_problem, wait_for

# Between the sample's small images and its larger ones (red.jpg and its copy, deep.jpg).
LIMIT = 10_000


def test_an_import_downloads_no_file_over_its_own_size_limit(client: TestClient) -> None:
    response = client.post(
        "/api/v1/imports",
        json={"url": Drive.url(SAMPLE), "options": {"maxFileSizeBytes": LIMIT}},
    )
    assert response.status_code == 202, response.text
    import_id = response.json()["id"]
    final = wait_for(client, import_id)

    failed = client.get(
        f"/api/v1/imports/{import_id}/items", params={"state": "failed", "limit": 100}
    ).json()["items"]
    too_large = {item["path"]: item["reason"] for item in failed if "too large" in item["reason"]}
    assert set(too_large) == {path for path, file in SAMPLE.files() if len(file.read()) > LIMIT}
    assert set(too_large.values()) == {
        "File too large: more than 10,000 bytes (the import's maxFileSizeBytes)."
    }
    # Without the option: 8 imported, 1 duplicate, 2 skipped, 2 failed (broken.jpg, huge.jpg).
    counters = final["counters"]
    assert (counters["imported"], counters["duplicates"], counters["skipped"]) == (6, 0, 2)
    assert counters["failed"] == 5


@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ({"speed": "max"}, "Unknown option(s) speed: an import's options are maxFileSizeBytes"),
        ({"deleteImagesOnRemoval": True}, "Unknown option(s) deleteImagesOnRemoval:"),
        (
            {"maxFileSizeBytes": EXPECTED.oversized_bytes + 1},
            f"options.maxFileSizeBytes is {EXPECTED.oversized_bytes + 1}, but this "
            f"installation's limit is {EXPECTED.oversized_bytes} bytes (MAX_FILE_SIZE_BYTES)",
        ),
        ({"maxFileSizeBytes": 0}, "options.maxFileSizeBytes is 0, but it must be"),
        ({"maxFileSizeBytes": "10MB"}, "options.maxFileSizeBytes is '10MB', but it must be"),
        ({"maxFileSizeBytes": True}, "options.maxFileSizeBytes is True, but it must be"),
        ({"mode": "fast"}, "options.mode is 'fast', but it must be full or lean"),
    ],
)
def test_options_the_workers_would_not_honour_are_refused(
    client: TestClient, options: dict[str, Any], detail: str
) -> None:
    response = client.post("/api/v1/imports", json={"url": Drive.url(SAMPLE), "options": options})
    problem = assert_problem(response, 422, "invalid-options")
    assert problem["detail"].startswith(detail), problem["detail"]
    assert problem["errors"] == [{"field": "options", "message": problem["detail"]}]
    assert client.get("/api/v1/imports").json()["items"] == []
