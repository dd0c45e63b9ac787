"""S3Store against moto (fast, in-process) and against a real SeaweedFS server (marker s3)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.endpoint
import botocore.endpoint_provider
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from pydantic import SecretStr

from imageimport.errors import ConfigError, FileTooLarge, StoreFull, TransientError
from imageimport.settings import Settings
from imageimport.storage import make_store
from imageimport.storage.s3 import S3Store, normalise_prefix
from tests.servers import unique_bucket_name

MiB = 1024 * 1024
MakeStore = Callable[..., S3Store]


@pytest.fixture
def moto_settings(tmp_path: Path) -> Iterator[Settings]:
    with mock_aws():
        yield Settings(
            data_dir=tmp_path,
            s3_bucket=unique_bucket_name(),
            s3_access_key_id="moto-access-key",
            s3_secret_access_key="moto-secret-key",
        )


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.s3)])
def base_settings(request: pytest.FixtureRequest) -> Settings:
    if request.param == "moto":
        return request.getfixturevalue("moto_settings")
    return request.getfixturevalue("s3_settings")


@pytest.fixture
def make(base_settings: Settings) -> MakeStore:
    """Build a store on this test's bucket, with settings overridden as given."""

    def build(*, page_size: int = 1000, **overrides: Any) -> S3Store:
        return S3Store(base_settings.model_copy(update=overrides), page_size=page_size)

    return build


@pytest.fixture
def store(make: MakeStore) -> S3Store:
    return make()


def bucket_exists(store: S3Store) -> bool:
    try:
        store.client.head_bucket(Bucket=store.bucket)
    except ClientError:
        return False
    return True


# -- behaviour on both backends ---------------------------------------------------------------


def test_round_trip(store: S3Store) -> None:
    data = os.urandom(700_000)
    store.put_file("ab/cd/image.jpg", io.BytesIO(data), len(data), "image/jpeg")

    assert store.exists("ab/cd/image.jpg")
    assert store.size("ab/cd/image.jpg") == len(data)
    head = store.client.head_object(Bucket=store.bucket, Key="ab/cd/image.jpg")
    assert head["ContentType"] == "image/jpeg"
    chunks = list(store.iter_bytes("ab/cd/image.jpg", chunk_size=256 * 1024))
    assert len(chunks) == 3
    assert b"".join(chunks) == data


def test_overwrite_replaces_the_object(store: S3Store) -> None:
    store.put_bytes("k", b"first version", "text/plain")
    store.put_bytes("k", b"second", "text/plain")
    assert b"".join(store.iter_bytes("k")) == b"second"
    assert store.size("k") == len(b"second")


def test_missing_objects(store: S3Store) -> None:
    assert not store.exists("nothing/here")
    assert store.size("nothing/here") is None
    with pytest.raises(KeyError):
        store.iter_bytes("nothing/here")
    store.delete("nothing/here")


def test_delete(store: S3Store) -> None:
    store.put_bytes("a/b", b"data", "application/octet-stream")
    store.put_bytes("a/c", b"data", "application/octet-stream")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert list(store.list_keys()) == ["a/c"]


def test_prefix_is_applied_to_every_key(make: MakeStore) -> None:
    prefixed = make(s3_prefix="/tenant//imports/")
    plain = make()
    prefixed.put_bytes("ab/image.jpg", b"jpeg", "image/jpeg")

    assert list(plain.list_keys()) == ["tenant/imports/ab/image.jpg"]
    assert plain.exists("tenant/imports/ab/image.jpg")
    assert not plain.exists("ab/image.jpg")
    assert list(prefixed.list_keys()) == ["ab/image.jpg"]
    assert list(prefixed.list_keys("ab/")) == ["ab/image.jpg"]
    assert prefixed.size("ab/image.jpg") == 4
    assert b"".join(prefixed.iter_bytes("ab/image.jpg")) == b"jpeg"
    prefixed.delete("ab/image.jpg")
    assert list(plain.list_keys()) == []


def test_bucket_is_created_on_first_use(store: S3Store) -> None:
    assert not bucket_exists(store)
    store.put_bytes("k", b"v", "text/plain")
    assert bucket_exists(store)
    store.check()


def test_missing_bucket_without_create_is_a_config_error(make: MakeStore) -> None:
    store = make(s3_create_bucket=False)
    with pytest.raises(ConfigError) as raised:
        store.check()
    message = str(raised.value)
    assert f"S3 bucket {store.bucket!r} does not exist" in message
    assert "S3_CREATE_BUCKET" in message
    with pytest.raises(ConfigError):
        store.put_bytes("k", b"v", "text/plain")
    assert not bucket_exists(store)


def test_existing_bucket_is_used_without_create(make: MakeStore) -> None:
    make().put_bytes("k", b"v", "text/plain")  # creates the bucket
    store = make(s3_create_bucket=False)
    store.check()
    assert b"".join(store.iter_bytes("k")) == b"v"


def test_list_keys_follows_pages(make: MakeStore) -> None:
    store = make(page_size=3)
    keys = [f"img/{index:02d}.jpg" for index in range(10)] + ["other/x.jpg"]
    for key in keys:
        store.put_bytes(key, b"x", "image/jpeg")
    requests: list[dict[str, Any]] = []
    store.client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda params, **_: requests.append(params)
    )

    assert list(store.list_keys("img/")) == keys[:10]
    assert len(requests) == 4  # 3 + 3 + 3 + 1
    assert all(request["query_string"]["max-keys"] == 3 for request in requests)
    assert sorted(store.list_keys()) == sorted(keys)


def test_multipart_upload_of_a_large_file(make: MakeStore, tmp_path: Path) -> None:
    store = make(s3_multipart_threshold_bytes=5 * MiB)
    source = tmp_path / "big.bin"
    digest = hashlib.md5()
    with source.open("wb") as out:
        for _ in range(40):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)

    with source.open("rb") as fileobj:
        store.put_file("big.bin", fileobj, 40 * MiB, "application/octet-stream")

    head = store.client.head_object(Bucket=store.bucket, Key="big.bin")
    # A multipart object's ETag is "<md5 of the parts' md5s>-<number of parts>".
    parts = math.ceil(40 * MiB / store.transfer_config.multipart_chunksize)
    assert parts > 1
    assert re.fullmatch(rf"[0-9a-f]{{32}}-{parts}", head["ETag"].strip('"'))
    assert head["ContentLength"] == 40 * MiB
    downloaded = hashlib.md5()
    for chunk in store.iter_bytes("big.bin", chunk_size=MiB):
        downloaded.update(chunk)
    assert downloaded.hexdigest() == digest.hexdigest()


def test_stale_multipart_uploads_under_the_prefix_are_aborted(s3_settings: Settings) -> None:
    # Real server only: moto reports every upload as started on 2010-11-10.
    store = S3Store(s3_settings.model_copy(update={"s3_prefix": "photos"}))
    store.ensure_bucket()

    def begin(key: str) -> str:
        return str(store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"])

    def open_uploads() -> set[str]:
        answer = store.client.list_multipart_uploads(Bucket=store.bucket)
        return {upload["UploadId"] for upload in answer.get("Uploads", ())}

    ours, theirs = begin("photos/images/ab/big.jpg"), begin("other/big.bin")
    assert store.remove_leftovers(3600) == 0  # too young: a live worker may be uploading
    assert open_uploads() == {ours, theirs}
    time.sleep(2.5)  # S3 reports the start to the second
    assert store.remove_leftovers(1) == 1
    assert open_uploads() == {theirs}


def test_leftovers_of_a_missing_bucket_are_none(make: MakeStore) -> None:
    store = make(s3_create_bucket=False)
    assert store.remove_leftovers(0) == 0
    assert not bucket_exists(store)


def test_small_file_is_a_single_put(make: MakeStore) -> None:
    store = make(s3_multipart_threshold_bytes=5 * MiB)
    store.put_bytes("small", b"x" * 1000, "application/octet-stream")
    etag = store.client.head_object(Bucket=store.bucket, Key="small")["ETag"].strip('"')
    assert etag == hashlib.md5(b"x" * 1000).hexdigest()


def test_the_endpoint_rules_run_once_for_many_keys(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore since 1.43.14 leaves the object key out of the endpoint rules' parameters
    (no rule reads it), so its cache of resolved endpoints hits for every key of a bucket;
    before, the rule tree was walked again for every PUT, about a fifth of a small PUT's
    client CPU (bench/RESULTS.md). pyproject's floor on boto3 is for this."""
    store.put_bytes("first", b"x", "application/octet-stream")
    walks = 0
    walk = botocore.endpoint_provider.RuleSet.evaluate

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal walks
        walks += 1
        return walk(self, *args, **kwargs)

    monkeypatch.setattr(botocore.endpoint_provider.RuleSet, "evaluate", counted)
    for n in range(5):
        store.put_bytes(f"images/{n:02x}/{n}.jpg", b"x", "image/jpeg")
    assert walks == 0


def test_announced_size_must_match(store: S3Store) -> None:
    with pytest.raises(ValueError, match="announced"):
        store.put_file("k", io.BytesIO(b"abc"), 10, "text/plain")
    assert not store.exists("k")


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../b", "a\\b", "a\x00b", "a//b", "a/"])
def test_hostile_keys_are_refused(store: S3Store, key: str) -> None:
    with pytest.raises(ValueError, match="Refusing"):
        store.put_bytes(key, b"x", "image/jpeg")
    for operation in (store.exists, store.size, store.iter_bytes, store.delete):
        with pytest.raises(ValueError, match="Refusing"):
            operation(key)


# -- moto only: errors injected where a real server cannot be made to fail on cue -----------


def test_make_store_picks_s3_when_a_bucket_is_set(moto_settings: Settings) -> None:
    assert isinstance(make_store(moto_settings), S3Store)


def test_prefix_normalisation() -> None:
    assert normalise_prefix("") == ""
    assert normalise_prefix("/") == ""
    assert normalise_prefix("//a///b/") == "a/b"
    with pytest.raises(ValueError):
        normalise_prefix("a/../b")


@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("InternalError", 500), ("ThrottlingException", 400)],
)
def test_throttling_and_server_errors_are_transient(
    moto_settings: Settings, code: str, status: int
) -> None:
    store = S3Store(moto_settings)
    store.ensure_bucket()
    with Stubber(store.client) as stub:
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
        with pytest.raises(TransientError, match=code):
            store.exists("k")


def test_access_denied_is_a_config_error(moto_settings: Settings) -> None:
    store = S3Store(moto_settings)
    store.ensure_bucket()
    with Stubber(store.client) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(ConfigError, match="access was refused"):
            store.iter_bytes("k")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("XMinioStorageFull", 507),  # MinIO below its free-space threshold
        ("InsufficientStorage", 507),
        ("SomethingElse", 507),  # any 507 Insufficient Storage
        ("QuotaExceeded", 403),  # Ceph RGW: a quota, not a credentials problem
        ("XMinioAdminBucketQuotaExceeded", 400),
    ],
)
def test_a_full_store_is_store_full(moto_settings: Settings, code: str, status: int) -> None:
    store = S3Store(moto_settings)
    store.ensure_bucket()
    with Stubber(store.client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StoreFull) as raised:
            store.put_bytes("ab/image.jpg", b"jpeg bytes", "image/jpeg")
    assert isinstance(raised.value, TransientError)  # space can be freed: retried
    assert str(raised.value) == (
        f"The object store is full (S3 at AWS S3 answered {code} (HTTP {status}) "
        f"for bucket {store.bucket!r})."
    )


def test_a_full_store_during_a_multipart_upload_is_store_full(moto_settings: Settings) -> None:
    store = S3Store(moto_settings.model_copy(update={"s3_multipart_threshold_bytes": 5 * MiB}))
    store.ensure_bucket()
    with Stubber(store.client) as stub:
        stub.add_client_error(
            "create_multipart_upload", service_error_code="XMinioStorageFull", http_status_code=507
        )
        with pytest.raises(StoreFull, match="XMinioStorageFull"):
            store.put_file("ab/big.jpg", io.BytesIO(bytes(6 * MiB)), 6 * MiB, "image/jpeg")


def test_an_object_over_the_store_size_limit_is_file_too_large(moto_settings: Settings) -> None:
    store = S3Store(moto_settings)
    store.ensure_bucket()
    with Stubber(store.client) as stub:
        stub.add_client_error(
            "put_object", service_error_code="EntityTooLarge", http_status_code=400
        )
        with pytest.raises(FileTooLarge) as raised:
            store.put_bytes("ab/image.jpg", b"jpeg bytes", "image/jpeg")
    assert str(raised.value) == (
        "The object store refuses files this large (S3 at AWS S3 answered EntityTooLarge "
        "(HTTP 400))."
    )


def test_unreachable_endpoint_is_transient_and_hides_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "very-secret-value-1234567890"
    store = S3Store(
        Settings(
            data_dir=tmp_path,
            s3_bucket="unreachable",
            s3_endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
            s3_access_key_id="key-id",
            s3_secret_access_key=secret,
        )
    )
    attempts: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda **_: attempts.append("send"))
    # Skip botocore's back-off between retries (several seconds), not the retries themselves.
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda _seconds: None)

    with pytest.raises(TransientError) as raised:
        store.put_bytes("k", b"v", "text/plain")
    assert "http://127.0.0.1:9" in str(raised.value)
    assert secret not in str(raised.value)
    assert secret not in repr(raised.value.__cause__)
    assert len(attempts) > 1  # botocore retried before giving up


# -- SeaweedFS only: things moto does not check ------------------------------------------------


@pytest.mark.s3
def test_presigned_url_can_be_fetched(s3_settings: Settings) -> None:
    store = S3Store(s3_settings)
    store.put_bytes("ab/image.jpg", b"jpeg bytes", "image/jpeg")
    url = store.presigned_url("ab/image.jpg", expires_seconds=60)
    assert url is not None
    assert "X-Amz-Signature=" in url

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"jpeg bytes"
    assert response.headers["content-type"] == "image/jpeg"

    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered).status_code == 403
    unsigned = url.split("?")[0]
    assert httpx.get(unsigned).status_code == 403


@pytest.mark.s3
def test_wrong_secret_is_a_config_error_without_the_secret(s3_settings: Settings) -> None:
    wrong = "definitely-the-wrong-secret"
    store = S3Store(s3_settings.model_copy(update={"s3_secret_access_key": SecretStr(wrong)}))
    with pytest.raises(ConfigError, match="access was refused") as raised:
        store.check()
    assert wrong not in str(raised.value)


def test_presigned_urls_use_the_public_endpoint_when_set(moto_settings: Settings) -> None:
    settings = moto_settings.model_copy(
        update={
            "s3_endpoint_url": "http://minio:9000",
            "s3_public_endpoint_url": "http://localhost:9000",
        }
    )
    url = S3Store(settings).presigned_url("images/ab/abc.jpg")
    assert url is not None
    assert url.startswith(f"http://localhost:9000/{settings.s3_bucket}/images/ab/abc.jpg?")
    internal = S3Store(moto_settings.model_copy(update={"s3_endpoint_url": "http://minio:9000"}))
    assert (internal.presigned_url("a/b") or "").startswith("http://minio:9000/")
