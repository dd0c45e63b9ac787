"""What the benchmark downloads from: the fake Google Drive (the real Drive API v3 wire
format, from tests/fakes) serving the cached images from disk, and a plain HTTP server with a
directory index for rclone. Both add the same latency to every request and stream each file
from disk, so neither holds the data set in memory."""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.fakes.folder import FakeFile, FakeFolder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import FaultMiddleware, FaultPlan, RunningServer

from bench.dataset import BenchImage

API_KEY = "bench-drive-key"
_FILES_PREFIX = "/drive/v3/files/"
_BLOCK = 256 * 1024


@dataclass
class DiskFile(FakeFile):
    """A fake Drive file whose bytes stay on disk until a request reads them."""

    disk_path: str = ""
    digest: str = ""

    @property
    def length(self) -> int:
        return self.size or 0

    @property
    def md5(self) -> str:
        return self.digest

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.length if end is None else min(end, self.length)
        with open(self.disk_path, "rb") as file:
            file.seek(start)
            position = start
            while position < end:
                block = file.read(min(_BLOCK, end - position))
                if not block:
                    return
                position += len(block)
                yield block


@dataclass
class ListedFile(FakeFile):
    """A file that is only ever listed: a size and a checksum, no bytes behind them."""

    @property
    def md5(self) -> str:
        return hashlib.md5(self.id.encode()).hexdigest()


def disk_folder(name: str, images: list[BenchImage]) -> FakeFolder:
    # `size` set means the fake sends no imageMediaMetadata, which would need a decode per
    # file per listing page.
    return FakeFolder(
        name,
        [
            DiskFile(m.name, mime_type=m.mime_type, size=m.size, disk_path=m.path, digest=m.md5)
            for m in images
        ],
    )


def listed_folder(count: int) -> FakeFolder:
    return FakeFolder(
        f"listing-{count}",
        [
            ListedFile(f"img-{i:06d}.jpg", mime_type="image/jpeg", size=100_000)
            for i in range(count)
        ],
    )


@dataclass
class DownloadTimes:
    """When each file's first download request reached the server, before the latency."""

    first_request: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    downloads: int = 0  # requests for a file's bytes (alt=media)


class _Timing:
    def __init__(self, app: ASGIApp, times: DownloadTimes) -> None:
        self.app = app
        self.times = times

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.times.requests += 1
            path: str = scope["path"]
            if path.startswith(_FILES_PREFIX) and b"alt=media" in scope["query_string"]:
                self.times.downloads += 1
                self.times.first_request.setdefault(path[len(_FILES_PREFIX) :], time.time())
        await self.app(scope, receive, send)


@dataclass
class DriveServer:
    server: RunningServer
    times: DownloadTimes

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self) -> dict[str, Any]:
        """Settings keyword arguments that point imageimport at this fake."""
        return {
            "gdrive_api_url": self.url,
            "gdrive_web_url": self.url,
            "gdrive_download_url": self.url,
            "google_api_key": API_KEY,
        }

    def env(self) -> dict[str, str]:
        return {key.upper(): str(value) for key, value in self.settings().items()}

    def stop(self) -> None:
        self.server.stop()


def folder_url(folder: FakeFolder) -> str:
    return f"https://drive.google.com/drive/folders/{folder.id}"


def start_drive(folders: list[FakeFolder], latency_s: float) -> DriveServer:
    times = DownloadTimes()
    app = make_gdrive_app(folders, api_key=API_KEY)
    # The timing layer sits outside the latency, so it sees when a request was sent.
    inner = _latency(app, latency_s)
    return DriveServer(RunningServer(_Timing(inner, times)), times)


def _latency(app: ASGIApp, latency_s: float) -> ASGIApp:
    return FaultMiddleware(app, FaultPlan(latency=latency_s))


def start_plain_http(images: list[BenchImage], latency_s: float) -> RunningServer:
    """A directory index and the files, as any web server would serve them (rclone's http
    backend reads the links of the index and HEADs each file for its size and date)."""
    by_name = {m.name: m for m in images}
    index = (
        "<!DOCTYPE html><html><head><title>Index of /</title></head><body><h1>Index of /</h1>"
        "<pre>"
        + "".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>\n' for n in by_name)
        + "</pre></body></html>"
    )

    async def listing(_: Request) -> Response:
        return HTMLResponse(index)

    async def file(request: Request) -> Response:
        image = by_name.get(request.path_params["name"])
        if image is None:
            return Response("not found\n", status_code=404)
        return FileResponse(image.path, media_type=image.mime_type)

    app = Starlette(routes=[Route("/", listing), Route("/{name}", file)])
    return RunningServer(_latency(app, latency_s))
