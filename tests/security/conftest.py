"""Helpers for the adversarial suite: the four routes behind a test-local ASGI "tap" that can
answer chosen requests with a redirect (to anywhere) and counts the body bytes the fake
really sent, plus checks that every stored object stays under its key prefix."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageimport.db.models import Image, ImportItem
from imageimport.runtime import Runtime
from imageimport.services.embedded import Snapshot, run_import
from imageimport.settings import Settings
from tests.fakes.dropbox import make_dropbox_app, shared_link
from tests.fakes.folder import FakeFolder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import RunningServer

ROUTES = ("gdrive-api", "gdrive-public", "dropbox-api", "dropbox-zip")
# Distinctive values, so a grep for them finds nothing else.
GOOGLE_KEY = "AIzaSy-SECRET-google-key-7f3a9c"
DROPBOX_KEY = "dbx-app-key-4d1e"
DROPBOX_SECRET = "SECRET-dropbox-app-secret-91b2"
DROPBOX_REFRESH = "SECRET-dropbox-refresh-token-5c6d"
OBJECT_KEY = re.compile(r"images/([0-9a-f]{2})/(\1[0-9a-f]{62})\.(jpg|png|gif|tif|bmp|webp|avif)")
THUMB_KEY = re.compile(r"images/([0-9a-f]{2})/(\1[0-9a-f]{62})\.thumb\.webp")


@dataclass
class Tap:
    """Wraps a fake: answers requests matching a rule with a redirect, and counts the body
    bytes handed to the connection per request (`path?query` plus any Dropbox-API-Arg)."""

    app: ASGIApp
    # (regex searched in the target, status, headers, body, times the body is sent)
    rules: list[tuple[str, int, dict[str, str], bytes, int]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    seen: list[str] = field(default_factory=list)

    def redirect(self, pattern: str, location: str) -> None:
        self.answer(pattern, 302, b"", location=location)

    def answer(
        self, pattern: str, status: int, body: bytes, repeat: int = 1, **headers: str
    ) -> None:
        self.rules.append((pattern, status, headers, body, repeat))

    def sent_for(self, needle: str) -> int:
        return sum(count for target, count in self.sent.items() if needle in target)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        target = f"{scope['path']}?{scope['query_string'].decode()}"
        if "dropbox-api-arg" in headers:
            target += " " + headers["dropbox-api-arg"]
        self.seen.append(target)
        for pattern, status, extra, body, repeat in self.rules:
            if re.search(pattern, target):
                headers = {k.replace("_", "-"): v for k, v in extra.items()}
                headers["content-length"] = str(len(body) * repeat)

                def chunks(body: bytes = body, repeat: int = repeat) -> Iterator[bytes]:
                    for _ in range(repeat):
                        self.sent[target] += len(body)
                        yield body

                # Streamed: it stops as soon as the client hangs up, like a real server.
                response = StreamingResponse(chunks(), status_code=status, headers=headers)
                await response(scope, receive, send)
                return

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.sent[target] += len(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, counting)


@dataclass
class Route:
    name: str
    url: str
    settings: dict[str, Any]
    server: RunningServer
    tap: Tap
    app: Any

    @property
    def env(self) -> dict[str, str]:
        return {key.upper(): str(value) for key, value in self.settings.items()}


@contextmanager
def serve_route(
    name: str,
    folder: FakeFolder,
    *,
    credentials: bool = True,
    google_key: str = GOOGLE_KEY,
    dropbox: tuple[str, str, str] = (DROPBOX_KEY, DROPBOX_SECRET, DROPBOX_REFRESH),
    **app_options: Any,
) -> Iterator[Route]:
    """One route's fake behind a Tap. The fake expects the distinctive credentials above;
    `credentials` are what imageimport is configured with (the same unless overridden)."""
    if name.startswith("gdrive"):
        app = make_gdrive_app(
            [folder], api_key=GOOGLE_KEY, large_file_threshold=256 * 1024, **app_options
        )
        endpoints = ("gdrive_api_url", "gdrive_web_url", "gdrive_download_url")
        url = f"https://drive.google.com/drive/folders/{folder.id}?usp=sharing"
    else:
        app = make_dropbox_app(
            [folder], DROPBOX_KEY, DROPBOX_SECRET, DROPBOX_REFRESH, **app_options
        )
        endpoints = ("dropbox_api_url", "dropbox_content_url", "dropbox_web_url")
        url = shared_link("www.dropbox.com", folder)
    tap = Tap(app)
    with RunningServer(tap) as server:
        settings: dict[str, Any] = dict.fromkeys(endpoints, server.url)
        if name == "gdrive-api" and credentials:
            settings["google_api_key"] = google_key
        if name == "dropbox-api" and credentials:
            key, secret_, refresh = dropbox
            settings |= {
                "dropbox_app_key": key,
                "dropbox_app_secret": secret_,
                "dropbox_refresh_token": refresh,
            }
        yield Route(name, url, settings, server, tap, app)


def run(settings: Settings, url: str) -> tuple[Runtime, Snapshot]:
    """Import `url` in this process; the caller closes the runtime."""
    runtime = Runtime(settings)
    try:
        return runtime, run_import(runtime, url, concurrency=4, poll_seconds=0.05)
    except BaseException:
        runtime.close()
        raise


@contextmanager
def imported(settings: Settings, url: str) -> Iterator[tuple[Runtime, Snapshot]]:
    runtime, result = run(settings, url)
    try:
        yield runtime, result
    finally:
        runtime.close()


def items_by_path(runtime: Runtime, import_id: str) -> dict[str, ImportItem]:
    with runtime.session() as session:
        rows = session.scalars(select(ImportItem).where(ImportItem.import_id == import_id))
        return {item.path: item for item in rows}


def images(runtime: Runtime) -> list[Image]:
    with runtime.session() as session:
        return list(session.scalars(select(Image)))


def assert_contained(runtime: Runtime, data_dir: Path) -> None:
    """Every object is a content address under images/, every image row points at two of
    them, and nothing was written anywhere else under the data directory."""
    keys = sorted(runtime.store.list_keys())
    for key in keys:
        assert OBJECT_KEY.fullmatch(key) or THUMB_KEY.fullmatch(key), key
    rows = images(runtime)
    assert keys == sorted(k for image in rows for k in (image.object_key, image.thumbnail_key))
    for image in rows:
        match = OBJECT_KEY.fullmatch(image.object_key)
        assert match and match.group(2) == image.sha256
    objects = data_dir / "objects"
    on_disk = sorted(p.relative_to(objects).as_posix() for p in objects.rglob("*") if p.is_file())
    assert on_disk == keys
    outside = {
        p.relative_to(data_dir).as_posix()
        for p in data_dir.rglob("*")
        if p.is_file() and objects not in p.parents
    }
    assert outside <= {"imageimport.db", "imageimport.db-wal", "imageimport.db-shm"}, outside


SettingsFactory = Callable[..., Settings]
