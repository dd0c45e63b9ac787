"""Storing a file: the worker's boto3 code (`S3Store.put_file`) against two other S3 clients
doing the same PUT (obstore, Rust's object_store; minio, MinIO's Python client), the same
files from memory, the same threads, the same SeaweedFS. Alternated; the best round of each
counts. CPU is this process's (every client thread included) and the S3 server's."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from bench import procstat
from bench.dataset import BenchImage
from bench.stack import ACCESS_KEY, SECRET_KEY, Stack
from bench.stats import rounded

BUCKET = "bench-clients"
ROUNDS = 2
Put = Callable[[str, bytes, str], None]


def run_s3clients(stack: Stack, images: Sequence[BenchImage], threads: int) -> dict[str, Any]:
    files = [(image.name, Path(image.path).read_bytes(), image.mime_type) for image in images]
    clients = _clients(stack)
    for name, put in clients.items():
        put(f"warm-up/{name}", b"x", "text/plain")  # connections and the bucket, before measuring
    best: dict[str, dict[str, float]] = {}
    for round_ in range(ROUNDS):
        for name, put in clients.items():
            measured = _measure(stack, put, files, threads, f"{name}/{round_}")
            kept = best.get(name)
            if kept is None or measured["all_ms"] < kept["all_ms"]:
                best[name] = measured
    _check_stored(stack, files, list(clients), ROUNDS)
    return {
        "files": len(files),
        "threads": threads,
        "rounds": ROUNDS,
        "mean_file_kb": rounded(sum(len(f[1]) for f in files) / len(files) / 1024),
        "per_put": best,
        "fastest": min(best, key=lambda name: best[name]["all_ms"]),
    }


def _measure(
    stack: Stack, put: Put, files: Sequence[tuple[str, bytes, str]], threads: int, prefix: str
) -> dict[str, float]:
    server_before = procstat.tree_cpu_seconds(stack.s3.pid or 0)
    client_before = time.process_time()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda f: put(f"{prefix}/{f[0]}", f[1], f[2]), files):
            pass
    wall = time.monotonic() - started
    client = (time.process_time() - client_before) * 1000 / len(files)
    server = (procstat.tree_cpu_seconds(stack.s3.pid or 0) - server_before) * 1000 / len(files)
    return {
        "client_ms": rounded(client),
        "server_ms": rounded(server),
        "all_ms": rounded(client + server),
        "puts_per_s": rounded(len(files) / wall),
    }


def _clients(stack: Stack) -> dict[str, Put]:
    from imageimport.settings import Settings
    from imageimport.storage.s3 import S3Store

    store = S3Store(
        Settings(
            s3_bucket=BUCKET,
            s3_endpoint_url=stack.s3.endpoint_url,
            s3_access_key_id=SecretStr(ACCESS_KEY),
            s3_secret_access_key=SecretStr(SECRET_KEY),
            s3_region="us-east-1",
        )
    )

    def boto3_put(key: str, data: bytes, content_type: str) -> None:
        store.put_file(key, io.BytesIO(data), len(data), content_type)

    clients: dict[str, Put] = {"boto3 (S3Store)": boto3_put}
    store.ensure_bucket()
    obstore_put = _obstore(stack)
    if obstore_put is not None:
        clients["obstore"] = obstore_put
    minio_put = _minio(stack)
    if minio_put is not None:
        clients["minio"] = minio_put
    return clients


def _obstore(stack: Stack) -> Put | None:
    try:
        import obstore
        from obstore.store import S3Store as ObjectStoreS3
    except ImportError:
        return None
    store = ObjectStoreS3(
        BUCKET,
        endpoint=stack.s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        client_options={"allow_http": True},
    )

    def put(key: str, data: bytes, content_type: str) -> None:
        obstore.put(store, key, data, attributes={"Content-Type": content_type})

    return put


def _minio(stack: Stack) -> Put | None:
    try:
        import urllib3
        from minio import Minio
    except ImportError:
        return None
    client = Minio(
        urlsplit(stack.s3.endpoint_url).netloc,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        secure=False,
        region="us-east-1",
        http_client=urllib3.PoolManager(maxsize=64),
    )

    def put(key: str, data: bytes, content_type: str) -> None:
        client.put_object(BUCKET, key, io.BytesIO(data), len(data), content_type=content_type)

    return put


def _check_stored(
    stack: Stack, files: Sequence[tuple[str, bytes, str]], names: list[str], rounds: int
) -> None:
    """Every client stored every file, whole and with its content type: the same job."""
    client: Any = stack.s3_client()
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        total += len(page.get("Contents", ()))
    expected = len(files) * rounds * len(names) + len(names)  # and one warm-up each
    if total != expected:
        raise RuntimeError(f"{total} objects stored, {expected} expected")
    name, data, content_type = files[-1]
    for client_name in names:
        head = client.head_object(Bucket=BUCKET, Key=f"{client_name}/{rounds - 1}/{name}")
        if (head["ContentLength"], head["ContentType"]) != (len(data), content_type):
            raise RuntimeError(f"{client_name} stored {name} as {head}")
