"""A fake Dropbox speaking the real wire formats: the API host (list_folder, OAuth token),
the content host (sharing/get_shared_link_file) and the web host (shared links, ZIP
downloads), all served by one app so tests can point every endpoint at one server.

Run `python -m tests.fakes.dropbox --port 8901 --sample` to try the CLI against it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import secrets
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fakes.folder import (
    Corruption,
    FakeFile,
    FakeFolder,
    add_file,
    big_folder,
    remove_file,
    sample_folder,
)
from tests.fakes.server import FaultPlan

PAGE_SIZE = 500  # the real service returns up to ~2000 entries per page
TOKEN_LIFETIME_SECONDS = 14400
HASH_BLOCK = 4 * 1024 * 1024  # Dropbox content_hash: SHA-256 over SHA-256s of 4 MiB blocks
_STORED_ABOVE = 1024 * 1024  # big pattern-filled fake files would look like zip bombs if deflated


def link_key(folder: FakeFolder) -> str:
    return "AA" + _alnum("key:" + folder.id, 22)


def rlkey(folder: FakeFolder) -> str:
    return _alnum("rlkey:" + folder.id, 25).lower()


def shared_link(base_url_or_www: str, folder: FakeFolder, dl: int = 0) -> str:
    """The link a user would paste, e.g. https://www.dropbox.com/scl/fo/<id>/<key>?rlkey=..."""
    base = base_url_or_www.rstrip("/")
    if "://" not in base:
        base = "https://" + base
    return f"{base}/scl/fo/{folder.id}/{link_key(folder)}?rlkey={rlkey(folder)}&dl={dl}"


def legacy_link(base_url_or_www: str, folder: FakeFolder) -> str:
    base = base_url_or_www.rstrip("/")
    if "://" not in base:
        base = "https://" + base
    return f"{base}/sh/{folder.id}/{link_key(folder)}?dl=0"


def _moment(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _alnum(seed: str, length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def content_hash(file: FakeFile) -> str:
    """Dropbox's content_hash, written from its reference page
    (https://www.dropbox.com/developers/reference/content-hash), apart from the app's own."""
    overall = hashlib.sha256()
    block = hashlib.sha256()
    in_block = 0
    for chunk in file.chunks():
        view = memoryview(chunk)
        while view:
            take = min(len(view), HASH_BLOCK - in_block)
            block.update(view[:take])
            in_block += take
            view = view[take:]
            if in_block == HASH_BLOCK:
                overall.update(block.digest())
                block, in_block = hashlib.sha256(), 0
    if in_block:
        overall.update(block.digest())
    return overall.hexdigest()


@dataclass
class FakeDropbox:
    """The fake's state, reachable as `app.state.dropbox`."""

    folders: dict[str, FakeFolder]
    app_key: str
    app_secret: str
    refresh_token: str
    page_size: int = PAGE_SIZE
    # bytes or a file are served with a Content-Length; a list of chunks is streamed without.
    raw_zips: dict[str, bytes | Path | list[bytes]] = field(default_factory=dict)
    faults: FaultPlan = field(default_factory=FaultPlan)
    corruption: Corruption = field(default_factory=Corruption)
    tokens: dict[str, bool] = field(default_factory=dict)  # access token -> still valid
    token_requests: int = 0
    zip_downloads: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (route, argument)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _zip_tokens: dict[str, str] = field(default_factory=dict)
    _hashes: dict[tuple[str, int | None, bytes], str] = field(default_factory=dict)

    def expire_tokens(self) -> None:
        """Every access token handed out so far now answers expired_access_token."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = False

    def route_calls(self, route: str) -> list[dict[str, Any]]:
        with self.lock:
            return [arg for name, arg in self.calls if name == route]

    def resolve(self, url: str) -> tuple[str, FakeFolder | None]:
        """("ok" | "not_found" | "private", folder) for a shared link."""
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        query = parse_qs(parts.query)
        if segments[:2] == ["scl", "fo"] and len(segments) == 4:
            folder = self.folders.get(segments[2])
            if folder is None or (query.get("rlkey") or [""])[0] != rlkey(folder):
                return "not_found", None
        elif segments[:1] == ["sh"] and len(segments) == 3:
            folder = self.folders.get(segments[1])
        else:
            return "not_found", None
        if folder is None or segments[-1] != link_key(folder):
            return "not_found", None
        return ("ok" if folder.public else "private"), folder

    def node(self, folder: FakeFolder, path: str) -> FakeFile | FakeFolder | None:
        """The node at a link-relative path ("" or "/a/b"), matched case-insensitively."""
        if path in ("", "/"):
            return folder
        # Walked on every call so tests can change the tree while the server runs.
        wanted = path.lstrip("/").lower()
        return next((n for p, n in folder.walk() if p.lower() == wanted), None)

    def add(self, parent: FakeFolder, file: FakeFile) -> None:
        """A file uploaded to a served folder while the server runs."""
        roots = self.folders.values()
        root = next(r for r in roots if r is parent or any(n is parent for _, n in r.walk()))
        with self.lock:
            add_file(root, parent, file)

    def remove(self, file: FakeFile) -> None:
        """A file deleted from a served folder while the server runs."""
        root = next(r for r in self.folders.values() if r.parent_of(file.id) is not None)
        with self.lock:
            remove_file(root, file)

    def file_hash(self, file: FakeFile) -> str:
        # By content too: a test may change a file at its source, as people do.
        key = (file.id, file.size, file.content)
        with self.lock:
            cached = self._hashes.get(key)
        if cached is None:
            cached = content_hash(file)
            with self.lock:
                self._hashes[key] = cached
        return cached


def make_dropbox_app(
    folders: list[FakeFolder],
    app_key: str = "app-key",
    app_secret: str = "app-secret",
    refresh_token: str = "refresh-token",
    *,
    page_size: int = PAGE_SIZE,
    raw_zips: dict[str, bytes | Path | list[bytes]] | None = None,
    faults: FaultPlan | None = None,
    corrupt: Mapping[str, int] | None = None,
) -> Starlette:
    """The fake; `faults` are answered in Dropbox's own formats (429 JSON body, etc.);
    `corrupt` maps file ids to how many of their downloads answer wrong bytes (with the
    metadata and length of the right ones; folder.Corruption)."""
    state = FakeDropbox(
        folders={f.id: f for f in folders},
        app_key=app_key,
        app_secret=app_secret,
        refresh_token=refresh_token,
        page_size=page_size,
        raw_zips=dict(raw_zips or {}),
        faults=faults or FaultPlan(),
        corruption=Corruption(corrupt),
    )
    routes = [
        Route("/oauth2/token", _token, methods=["POST"]),
        Route("/2/files/list_folder", _list_folder, methods=["POST"]),
        Route("/2/files/list_folder/continue", _list_folder_continue, methods=["POST"]),
        Route("/2/sharing/get_shared_link_file", _get_shared_link_file, methods=["POST"]),
        Route("/scl/fo/{folder_id}/{key}", _web_link, methods=["GET"]),
        Route("/sh/{folder_id}/{key}", _web_link, methods=["GET"]),
        Route("/zip_download_get/{token}", _zip_download, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.dropbox = state
    app.add_middleware(_DropboxFaults, plan=state.faults)
    return app


# --- OAuth ----------------------------------------------------------------------------


async def _token(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    basic = request.headers.get("Authorization", "")
    if basic.startswith("Basic "):
        try:
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id = client_secret = None
    with state.lock:
        state.token_requests += 1
    if form.get("grant_type") != "refresh_token":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if client_id != state.app_key or client_secret != state.app_secret:
        return JSONResponse(
            {"error": "invalid_client: Invalid client_id or client_secret"}, status_code=400
        )
    if form.get("refresh_token") != state.refresh_token:
        return JSONResponse(
            {"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"},
            status_code=400,
        )
    token = "sl.fake-" + secrets.token_urlsafe(24)
    with state.lock:
        state.tokens[token] = True
    return JSONResponse(
        {"access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS, "token_type": "bearer"}
    )


def _auth_error(request: Request) -> Response | None:
    state: FakeDropbox = request.app.state.dropbox
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else None
    with state.lock:
        valid = state.tokens.get(token) if token else None
    if valid is None:
        return _error(["invalid_access_token"], status=401)
    if not valid:
        return _error(["expired_access_token"], status=401)
    return None


def _error(tags: list[str], status: int = 409) -> JSONResponse:
    """Dropbox's error body: {"error_summary": "a/b/..", "error": {".tag": "a", "a": ...}}."""
    error: dict[str, Any] = {".tag": tags[-1]}
    for tag in reversed(tags[:-1]):
        error = {".tag": tag, tag: error}
    return JSONResponse(
        {"error_summary": "/".join(tags) + "/..", "error": error}, status_code=status
    )


def _bad_input(route: str, message: str) -> Response:
    return PlainTextResponse(f'Error in call to API function "{route}": {message}', 400)


# --- files/list_folder ----------------------------------------------------------------


async def _list_folder(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    if (denied := _auth_error(request)) is not None:
        return denied
    try:
        arg = json.loads(await request.body())
    except ValueError:
        return _bad_input("files/list_folder", "request body: could not decode input as JSON")
    with state.lock:
        state.calls.append(("files/list_folder", arg))
    link = (arg.get("shared_link") or {}).get("url")
    if arg.get("recursive") and link:
        return _bad_input(
            "files/list_folder", "recursive list folder is not supported for shared links"
        )
    if not link:
        return _error(["path", "not_found"])  # the fake has no user Dropbox of its own
    status, folder = state.resolve(link)
    if folder is None:
        return _error(["path", "not_found"])
    if status == "private":
        return _error(["path", "restricted_content"])
    path = arg.get("path", "")
    node = state.node(folder, path)
    if node is None:
        return _error(["path", "not_found"])
    if not isinstance(node, FakeFolder):
        return _error(["path", "not_folder"])
    return _page(state, link, path, node, 0)


async def _list_folder_continue(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    if (denied := _auth_error(request)) is not None:
        return denied
    try:
        cursor = json.loads(await request.body())["cursor"]
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        link, path, offset = position["link"], position["path"], int(position["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return _error(["reset"])
    with state.lock:
        state.calls.append(("files/list_folder/continue", {"cursor": cursor}))
    status, folder = state.resolve(link)
    node = state.node(folder, path) if folder is not None and status == "ok" else None
    if not isinstance(node, FakeFolder):
        return _error(["path", "not_found"])
    return _page(state, link, path, node, offset)


def _page(state: FakeDropbox, link: str, path: str, folder: FakeFolder, offset: int) -> Response:
    children = folder.children[offset : offset + state.page_size]
    following = offset + len(children)
    cursor = base64.urlsafe_b64encode(
        json.dumps({"link": link, "path": path, "offset": following}).encode()
    ).decode()
    return JSONResponse(
        {
            "entries": [_metadata(state, child) for child in children],
            "cursor": cursor,
            "has_more": following < len(folder.children),
        }
    )


def _metadata(state: FakeDropbox, node: FakeFile | FakeFolder) -> dict[str, Any]:
    # Listings through a shared link carry no path_lower/path_display: the caller has
    # no path to the items in its own Dropbox.
    if isinstance(node, FakeFolder):
        return {".tag": "folder", "name": node.name, "id": f"id:{node.id}"}
    return {
        ".tag": "file",
        "name": node.name,
        "id": f"id:{node.id}",
        "client_modified": _moment(node.modified),
        "server_modified": _moment(node.modified),
        "rev": hashlib.sha1(node.id.encode()).hexdigest()[:15],
        "size": node.length,
        "is_downloadable": True,
        "content_hash": state.file_hash(node),
    }


# --- sharing/get_shared_link_file (content host) ---------------------------------------


async def _get_shared_link_file(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    if (denied := _auth_error(request)) is not None:
        return denied
    raw = request.headers.get("Dropbox-API-Arg") or request.query_params.get("arg")
    try:
        arg = json.loads(raw or "")
        link = arg["url"]
    except (ValueError, KeyError, TypeError):
        return _bad_input("sharing/get_shared_link_file", "missing or bad Dropbox-API-Arg")
    with state.lock:
        state.calls.append(("sharing/get_shared_link_file", arg))
    status, folder = state.resolve(link)
    if folder is None:
        return _error(["shared_link_not_found"])
    if status == "private":
        return _error(["shared_link_access_denied"])
    node = state.node(folder, arg.get("path") or "")
    if node is None:
        return _error(["shared_link_not_found"])
    if isinstance(node, FakeFolder):
        return _error(["shared_link_is_directory"])
    result = {
        ".tag": "file",
        "url": link,
        "id": f"id:{node.id}",
        "name": node.name,
        "link_permissions": {
            "can_revoke": False,
            "visibility_policies": [],
            "can_set_expiry": False,
            "can_remove_expiry": False,
            "allow_download": True,
            "can_allow_download": False,
            "can_disallow_download": False,
            "allow_comments": True,
            "team_restricts_comments": False,
            "resolved_visibility": {".tag": "public"},
        },
        "client_modified": _moment(node.modified),
        "server_modified": _moment(node.modified),
        "rev": hashlib.sha1(node.id.encode()).hexdigest()[:15],
        "size": node.length,
    }
    return StreamingResponse(
        state.corruption.body(node),
        media_type="application/octet-stream",
        headers={
            # ASCII-only JSON, as the real header carries non-ASCII names \u-escaped.
            "Dropbox-API-Result": json.dumps(result),
            "Content-Length": str(node.length),
        },
    )


# --- web host: shared links and the folder ZIP -------------------------------------------


async def _web_link(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    status, folder = state.resolve(str(request.url))
    if folder is None:
        return HTMLResponse(_page_html("This item was deleted"), status_code=404)
    if status == "private":
        # A link restricted to some people sends strangers to the sign-in page.
        return HTMLResponse(_page_html("Sign in to Dropbox"))
    if request.query_params.get("dl") != "1":
        return HTMLResponse(_page_html(folder.name))
    # Stable per folder (the real one is not) so path-based fault injection can target it.
    token = _alnum("zip:" + folder.id, 24)
    with state.lock:
        state._zip_tokens[token] = folder.id
    return RedirectResponse(f"/zip_download_get/{token}", status_code=302)


async def _zip_download(request: Request) -> Response:
    state: FakeDropbox = request.app.state.dropbox
    with state.lock:
        folder_id = state._zip_tokens.get(request.path_params["token"])
        state.zip_downloads += folder_id is not None
    if folder_id is None:
        return HTMLResponse(_page_html("This link has expired"), status_code=404)
    folder = state.folders[folder_id]
    headers = {"Content-Disposition": f'attachment; filename="{folder.id}.zip"'}
    raw = state.raw_zips.get(folder_id)
    if isinstance(raw, bytes):
        return Response(raw, media_type="application/zip", headers=headers)
    if isinstance(raw, Path):
        return FileResponse(raw, media_type="application/zip", headers=headers)
    if isinstance(raw, list):
        return StreamingResponse(iter(raw), media_type="application/zip", headers=headers)
    descriptor, name = tempfile.mkstemp(prefix="fake-dropbox-", suffix=".zip")
    os.close(descriptor)
    write_folder_zip(folder, Path(name))
    return FileResponse(
        name,
        media_type="application/zip",
        headers=headers,
        background=BackgroundTask(os.unlink, name),
    )


def write_folder_zip(folder: FakeFolder, target: Path) -> None:
    """A ZIP like Dropbox's: everything under "<folder name>/", directory entries included."""
    stamp = (2024, 5, 1, 12, 0, 0)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(zipfile.ZipInfo(f"{folder.name}/", stamp), b"")
        for path, node in folder.walk():
            name = f"{folder.name}/{path}"
            if isinstance(node, FakeFolder):
                archive.writestr(zipfile.ZipInfo(name + "/", stamp), b"")
                continue
            # Each file entry carries its modification time, the ZIP way (MS-DOS date, time).
            info = zipfile.ZipInfo(name, node.modified.timetuple()[:6])
            info.compress_type = (
                zipfile.ZIP_STORED if node.length > _STORED_ABOVE else zipfile.ZIP_DEFLATED
            )
            info.file_size = node.length
            with archive.open(info, "w", force_zip64=node.length >= 2**31) as out:
                for chunk in node.chunks():
                    out.write(chunk)


def _page_html(title: str) -> str:
    return f"<!DOCTYPE html><html><head><title>{title} - Dropbox</title></head><body></body></html>"


# --- faults in Dropbox's formats -------------------------------------------------------


class _DropboxFaults:
    """Like tests.fakes.server.FaultMiddleware, but with the bodies the SDK expects."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.plan.pick(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if fault is None:
            await self.app(scope, receive, send)
        elif fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
        elif fault.kind == "429":
            seconds = max(1, math.ceil(fault.retry_after))  # the real header is whole seconds
            body = json.dumps(
                {
                    "error_summary": "too_many_requests/..",
                    "error": {"reason": {".tag": "too_many_requests"}, "retry_after": seconds},
                }
            ).encode()
            await _send_raw(
                send,
                429,
                body,
                [(b"content-type", b"application/json"), (b"retry-after", b"%d" % seconds)],
            )
        elif fault.kind == "500":
            await _send_raw(send, 500, b"Internal Server Error", [(b"content-type", b"text/plain")])
        elif fault.kind == "drop":
            await self.app(scope, receive, _dropping(send))
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")


async def _send_raw(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _dropping(send: Send) -> Send:
    """Pass the real headers, then half of the first body chunk, then break the connection."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
            raise ConnectionResetError("injected dropped connection")
        await send(message)

    return wrapped


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve a fake Dropbox for manual testing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--sample", action="store_true", help="serve sample_folder()")
    parser.add_argument("--big", type=int, default=0, help="also serve big_folder(N)")
    args = parser.parse_args(argv)
    folders = [sample_folder()[0]] if args.sample or not args.big else []
    if args.big:
        folders.append(big_folder(args.big))
    base = f"http://{args.host}:{args.port}"
    print("Shared folder links (paste as is; the web endpoint below stands in for dropbox.com):")
    for folder in folders:
        print(f"  {folder.name}: {shared_link('https://www.dropbox.com', folder)}")
    print("\nEnvironment for imageimport:")
    for name in ("DROPBOX_API_URL", "DROPBOX_CONTENT_URL", "DROPBOX_WEB_URL"):
        print(f"  export {name}={base}")
    print("  # and for the API route instead of the public ZIP download:")
    print("  export DROPBOX_APP_KEY=app-key DROPBOX_APP_SECRET=app-secret")
    print("  export DROPBOX_REFRESH_TOKEN=refresh-token")
    uvicorn.run(make_dropbox_app(folders), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
