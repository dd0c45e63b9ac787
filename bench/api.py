"""GET /api/v1/images with many image rows in PostgreSQL: the first page and deep pages
(keyset cursors), measured from a client over HTTP against `imageimport api`."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.stack import Stack, free_port
from bench.stats import percentile, rounded
from bench.workers import imageimport
from imageimport.api.pagination import Cursors, cursor_key
from imageimport.settings import Settings

LIMIT = 50
# The filters of an unfiltered listing, as the route puts them into its cursors.
_NO_FILTERS: dict[str, Any] = {
    "import_id": None,
    "provider": None,
    "format": None,
    "name": None,
    "taken_after": None,
    "taken_before": None,
}

_FILL = """
INSERT INTO images (sha256, object_key, thumbnail_key, size, content_type, width, height,
                    format, taken_at, camera, name, path, provider, source_file_id, import_id,
                    created_at)
SELECT h, 'images/' || left(h, 2) || '/' || h || '.jpg',
       'images/' || left(h, 2) || '/' || h || '.thumb.webp',
       80000 + i % 40000, 'image/jpeg', 800 + i % 400, 600 + i % 300,
       (ARRAY['JPEG', 'JPEG', 'JPEG', 'PNG', 'WEBP'])[1 + i % 5],
       CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2020-01-01' + i * interval '1 minute' END,
       CASE WHEN i % 2 = 0 THEN 'Canon EOS 5D' END,
       'img-' || i || '.jpg', 'photos/img-' || i || '.jpg', 'gdrive', 'file' || i, :import_id,
       now()
FROM (SELECT i, md5(i::text) || md5((-i)::text) AS h FROM generate_series(1, :rows) AS i) AS s
"""


def fill_images(url: str, rows: int) -> float:
    """`rows` image rows of one finished import in the database at `url`, vacuumed and
    analysed; the seconds it took."""
    engine = create_engine(url)
    started = time.monotonic()
    with engine.begin() as connection:
        import_id = "00000000-0000-4000-8000-000000000001"
        connection.execute(
            text(
                "INSERT INTO imports (id, provider, url, folder_id, state, options, round, "
                "created_at) VALUES (:id, 'gdrive', 'https://drive.google.com/drive/folders/x', "
                "'x', 'succeeded', '{}', 0, now())"
            ),
            {"id": import_id},
        )
        connection.execute(text(_FILL), {"rows": rows, "import_id": import_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE images"))
    engine.dispose()
    return time.monotonic() - started


def run_api(stack: Stack, rows: int, requests: int, work_dir: Path) -> dict[str, Any]:
    url = stack.database("bench_api")
    fill_s = fill_images(url, rows)

    port = free_port()
    env = stack.env(url, "bench-api", work_dir / "data")
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / "api.log").open("wb") as log:
        # Reads only: no token is needed (changes would be refused, and `api` warns so).
        server = subprocess.Popen(
            imageimport("api", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            _wait_ready(client, server, work_dir)
            cursors = Cursors(cursor_key(Settings(_env_file=None, database_url=url)))  # type: ignore[call-arg]
            pages = _pages(client, cursors, rows)
            measured = {name: _measure(client, params, requests) for name, params in pages}
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    result: dict[str, Any] = {"rows": rows, "fill_s": rounded(fill_s), "requests": requests}
    for name, latencies in measured.items():
        result[f"{name}_p50_ms"] = rounded(percentile(latencies, 50) * 1000)
        result[f"{name}_p99_ms"] = rounded(percentile(latencies, 99) * 1000)
    result["p99_ms_max"] = max(v for k, v in result.items() if k.endswith("_p99_ms"))
    return result


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], work_dir: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"imageimport api exited:\n{(work_dir / 'api.log').read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("imageimport api did not start")


def _pages(client: httpx.Client, cursors: Cursors, rows: int) -> list[tuple[str, dict[str, Any]]]:
    """Query parameters of each page measured. Deep cursors are made with the API's own
    cursor code; checked first against a cursor the API handed out, so a change of format
    fails here rather than measuring error answers."""
    first = client.get("/api/v1/images", params={"limit": LIMIT}).json()
    last_id = first["items"][-1]["id"]
    if first["next_cursor"] != cursors.encode("images", {"id": last_id}, _NO_FILTERS):
        raise RuntimeError("the API's cursor format changed: update bench/api.py")

    def at(image_id: int) -> dict[str, Any]:
        cursor = cursors.encode("images", {"id": image_id}, _NO_FILTERS)
        return {"limit": LIMIT, "cursor": cursor}

    return [
        ("first_page", {"limit": LIMIT}),
        ("middle_page", at(rows // 2)),
        ("last_page", at(LIMIT + 1)),
        ("format_filter_first_page", {"limit": LIMIT, "format": "PNG"}),
    ]


def _measure(client: httpx.Client, params: dict[str, Any], requests: int) -> list[float]:
    for _ in range(max(5, requests // 10)):  # warm the connection and the caches
        _check(client.get("/api/v1/images", params=params), params)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/api/v1/images", params=params)
        latencies.append(time.perf_counter() - started)
        _check(response, params)
    return latencies


def _check(response: httpx.Response, params: dict[str, Any]) -> None:
    if response.status_code != 200 or len(response.json()["items"]) != LIMIT:
        raise RuntimeError(f"/api/v1/images?{params}: {response.status_code} {response.text[:300]}")
