"""/api/v1/images: list with filters and cursors, read, bytes (local and S3), delete."""

from __future__ import annotations

import hashlib
import io
import string
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from imageimport.api import create_app
from imageimport.settings import Settings
from tests.api.conftest import (
    BIG,
    EXPECTED,
    GOOD,
    SAMPLE,
    assert_problem,
    import_folder,
    postgres_only,
    sqlite_only,
)
from tests.fakes.folder import TAKEN_AT
from tests.servers import unique_bucket_name

SOURCE_BYTES = {path: file.read() for path, file in [*SAMPLE.files(), *GOOD.files()]}


def _all_pages(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/images", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def test_images_are_listed_newest_first_with_metadata(client: TestClient) -> None:
    done = import_folder(client, SAMPLE)
    page = client.get("/api/v1/images").json()
    images = page["items"]
    assert page["next_cursor"] is None
    assert len(images) == 8
    ids = [image["id"] for image in images]
    assert ids == sorted(ids, reverse=True)
    assert {(i["width"], i["height"], i["format"]) for i in images} == set(EXPECTED.images.values())
    red = next(i for i in images if i["path"] in ("red.jpg", "copy of red.jpg"))
    assert red["camera"] == "Canon EOS 5D"
    assert red["taken_at"].startswith(TAKEN_AT.isoformat())
    assert red["content_type"] == "image/jpeg"
    assert red["provider"] == "gdrive" and red["import_id"] == done["id"]
    assert red["sha256"] == hashlib.sha256(SOURCE_BYTES["red.jpg"]).hexdigest()
    assert red["links"] == {
        "self": f"/api/v1/images/{red['id']}",
        "content": f"/api/v1/images/{red['id']}/content",
        "thumbnail": f"/api/v1/images/{red['id']}/thumbnail",
    }
    one = client.get(red["links"]["self"])
    assert one.status_code == 200 and one.json() == red


def test_filters(client: TestClient) -> None:
    sample = import_folder(client, SAMPLE)
    good = import_folder(client, GOOD)
    again = import_folder(client, GOOD)  # finds them unchanged

    def paths(**params: Any) -> set[str]:
        return {image["path"] for image in _all_pages(client, **params)}

    everything = _all_pages(client)
    assert len(everything) == 11

    def ids(**params: Any) -> set[int]:
        return {image["id"] for image in _all_pages(client, **params)}

    assert ids(import_id=sample["id"]) == {
        image["id"] for image in everything if image["import_id"] == sample["id"]
    }
    assert len(ids(import_id=sample["id"])) == 8
    assert (
        paths(import_id=good["id"])
        == paths(import_id=again["id"])
        == {
            "one.png",
            "two.jpg",
            "three.webp",
        }
    )
    assert paths(import_id="00000000-0000-4000-8000-000000000000") == set()
    assert len(paths(provider="gdrive")) == 11
    assert paths(provider="dropbox") == set()
    pngs = {p for p, (_, _, fmt) in EXPECTED.images.items() if fmt == "PNG"} | {"one.png"}
    assert paths(format="PNG") == paths(format="png") == pngs
    assert paths(name="ÜNÏ") == {"ünïcödé 写真.png"}
    assert paths(name="%") == paths(name="_x_") == set()  # wildcards are plain characters
    assert paths(name="deep") == {"sub/deeper/deep.jpg"}
    taken = TAKEN_AT.isoformat()
    red = paths(taken_after=taken, taken_before=(TAKEN_AT + timedelta(seconds=1)).isoformat())
    assert len(red) == 1 and red <= {"red.jpg", "copy of red.jpg"}
    assert paths(taken_after=f"{taken}+00:00") == red
    assert paths(taken_before=taken) == set()
    assert paths(taken_after=(TAKEN_AT + timedelta(seconds=1)).isoformat()) == set()
    assert paths(format="PNG", name="one") == {"one.png"}


@sqlite_only
def test_bad_filters_are_validation_problems(client: TestClient) -> None:
    for params in [
        {"limit": 0},
        {"limit": 201},
        {"limit": "ten"},
        {"provider": "flickr"},
        {"format": "SVG"},
        {"import_id": "nope"},
        {"taken_after": "yesterday"},
        {"taken_after": "1626255005"},
        {"name": "x" * 201},
        {"name": "a\x00b"},
        {"taken_before": "0001-01-01T00:00:00+05:00"},
    ]:
        response = client.get("/api/v1/images", params=params)
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["field"] == next(iter(params)), params


def test_pages_follow_each_other_and_cursors_are_tamper_evident(client: TestClient) -> None:
    import_folder(client, BIG)
    first = client.get("/api/v1/images", params={"limit": 10}).json()
    walked = _all_pages(client, limit=10)
    ids = [image["id"] for image in walked]
    assert len(ids) == len(set(ids)) == 25
    assert ids == sorted(ids, reverse=True)
    assert [i["id"] for i in first["items"]] == ids[:10]

    cursor = first["next_cursor"]
    assert client.get("/api/v1/images", params={"limit": 10, "cursor": cursor}).status_code == 200
    body, signature = cursor.split(".")
    # The signature (32 bytes in 43 characters) ends in 2 unused bits: this other spelling
    # decodes to the very same bytes, and is refused all the same.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    twin = alphabet[alphabet.index(signature[-1]) ^ 1]
    response = client.get("/api/v1/images", params={"cursor": f"{body}.{signature[:-1]}{twin}"})
    assert_problem(response, 400, "invalid-cursor")
    # A change anywhere is refused: spread over the cursor, and at both ends of each part
    # (the last character of base64 carries unused bits).
    dot = cursor.index(".")
    positions = {*range(0, len(cursor), 5), 0, dot - 1, dot + 1, len(cursor) - 1} - {dot}
    for position in sorted(positions):
        for replacement in "AB":
            if replacement != cursor[position]:
                changed = cursor[:position] + replacement + cursor[position + 1 :]
                response = client.get("/api/v1/images", params={"cursor": changed})
                assert_problem(response, 400, "invalid-cursor")
                break
    for bad in (
        f"{body}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        body,
        "",
        ".",
        "!!!.???",
        "x" * 512,
        f"{signature}.{body}",
    ):
        response = client.get("/api/v1/images", params={"cursor": bad})
        assert_problem(response, 400, "invalid-cursor")
    # A real cursor, but of another list or of other filters.
    assert_problem(client.get("/api/v1/imports", params={"cursor": cursor}), 400, "invalid-cursor")
    response = client.get("/api/v1/images", params={"cursor": cursor, "format": "PNG"})
    problem = assert_problem(response, 400, "invalid-cursor")
    assert "filters" in problem["detail"]
    response = client.get("/api/v1/images", params={"cursor": "x" * 513})
    assert_problem(response, 422, "validation-error")


def test_unknown_images_are_404_problems(client: TestClient) -> None:
    for path in ("", "/content", "/thumbnail"):
        assert_problem(client.get(f"/api/v1/images/999{path}"), 404, "not-found")
        assert_problem(client.get(f"/api/v1/images/abc{path}"), 422, "validation-error")
        assert_problem(client.get(f"/api/v1/images/0{path}"), 422, "validation-error")
        assert_problem(client.get(f"/api/v1/images/{2**64}{path}"), 422, "validation-error")
    assert_problem(client.delete("/api/v1/images/999"), 404, "not-found")


def test_local_store_streams_content_and_thumbnails(client: TestClient) -> None:
    import_folder(client, GOOD)
    images = {i["path"]: i for i in client.get("/api/v1/images").json()["items"]}
    for path, image in images.items():
        response = client.get(image["links"]["content"])
        assert response.status_code == 200
        assert response.content == SOURCE_BYTES[path]
        assert response.headers["content-type"] == image["content_type"]
        assert response.headers["etag"] == f'"{image["sha256"]}"'
        assert "immutable" in response.headers["cache-control"]
        assert response.headers["x-content-type-options"] == "nosniff"
        etag = {"If-None-Match": f'"{image["sha256"]}"'}
        cached = client.get(image["links"]["content"], headers=etag)
        assert cached.status_code == 304 and cached.content == b""

        thumbnail = client.get(image["links"]["thumbnail"])
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/webp"
        with PILImage.open(io.BytesIO(thumbnail.content)) as picture:
            assert picture.format == "WEBP"
            assert picture.size[0] <= image["width"] and picture.size[1] <= image["height"]


@sqlite_only
def test_a_missing_object_is_a_404_problem(client: TestClient) -> None:
    import_folder(client, GOOD)
    image = client.get("/api/v1/images", params={"limit": 1}).json()["items"][0]
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    for key in list(store.list_keys()):
        store.delete(key)
    problem = assert_problem(client.get(image["links"]["content"]), 404, "not-found")
    assert "stored file" in problem["detail"]
    assert_problem(client.get(image["links"]["thumbnail"]), 404, "not-found")


def test_delete_removes_the_row_and_both_objects(client: TestClient) -> None:
    done = import_folder(client, GOOD)
    images = client.get("/api/v1/images").json()["items"]
    victim = images[0]
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    keys_before = set(store.list_keys())
    assert len(keys_before) == 6

    response = client.delete(victim["links"]["self"])
    assert response.status_code == 204 and response.content == b""
    assert_problem(client.get(victim["links"]["self"]), 404, "not-found")
    assert_problem(client.get(victim["links"]["content"]), 404, "not-found")
    assert_problem(client.delete(victim["links"]["self"]), 404, "not-found")
    remaining = {i["id"] for i in client.get("/api/v1/images").json()["items"]}
    assert remaining == {i["id"] for i in images} - {victim["id"]}
    keys_after = set(store.list_keys())
    assert len(keys_after) == 4 and keys_after < keys_before
    assert all(victim["sha256"] not in key for key in keys_after)

    # The file that found it stays, pointing at nothing now.
    items = client.get(f"/api/v1/imports/{done['id']}/items").json()["items"]
    orphan = next(i for i in items if i["path"] == victim["path"])
    assert orphan["state"] == "done" and orphan["image_id"] is None
    assert sorted(i["image_id"] for i in items if i["image_id"]) == sorted(remaining)


@postgres_only
def test_s3_content_redirects_to_a_presigned_url(
    api_settings: Callable[..., Settings], s3_server: Any
) -> None:
    settings = api_settings(
        s3_bucket=unique_bucket_name(),
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
    )
    with TestClient(create_app(settings)) as client:
        import_folder(client, GOOD)
        images = client.get("/api/v1/images").json()["items"]
        assert len(images) == 3
        for image in images:
            response = client.get(image["links"]["content"], follow_redirects=False)
            assert response.status_code == 307
            location = response.headers["location"]
            assert location.startswith(s3_server.endpoint_url)
            fetched = httpx.get(location, timeout=30)
            assert fetched.status_code == 200
            assert fetched.content == SOURCE_BYTES[image["path"]]

            thumbnail = client.get(image["links"]["thumbnail"], follow_redirects=False)
            assert thumbnail.status_code == 307
            fetched = httpx.get(thumbnail.headers["location"], timeout=30)
            assert fetched.status_code == 200
            with PILImage.open(io.BytesIO(fetched.content)) as picture:
                assert picture.format == "WEBP"

        # The page's policy lets it show (and, with a token, fetch) what the links point at.
        store = "{0.scheme}://{0.netloc}".format(urlsplit(location))
        policy = client.get("/").headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert store in directives["img-src"].split()
        assert store in directives["connect-src"].split()

        victim = images[0]
        assert client.delete(victim["links"]["self"]).status_code == 204
        keys = list(client.app.state.runtime.store.list_keys())  # type: ignore[attr-defined]
        assert len(keys) == 4 and all(victim["sha256"] not in key for key in keys)
