"""A fake Google Drive speaking the real wire formats of the parts imageimport uses.

Drive API v3 (`{gdrive_api_url}`): GET /drive/v3/files (files.list with `'ID' in parents and
trashed=false`, pageSize, opaque pageToken), GET /drive/v3/files/{id} (metadata, or the bytes
with alt=media, Range supported), API key checked, Google's JSON error bodies.
Public web pages (`{gdrive_web_url}`, `{gdrive_download_url}`): /embeddedfolderview,
/file/d/{id}/view (redirects shortcuts to their target), /download with the "can't scan this
file for viruses" confirmation page above `large_file_threshold`.

A folder that is not public, or an item whose resource key is required but not sent, answers
like the real service: 404 from the API, a redirect to the Google sign-in page from the web.
A file Drive flagged as malware or spam (`abusive`) answers alt=media with 403
cannotDownloadAbusiveFile unless acknowledgeAbuse=true is sent, and acknowledgeAbuse=true on a
file that is not flagged answers 403 invalidAbuseAcknowledgment, as users of rclone and
plexdrive report it (rclone/rclone#2317, plexdrive/plexdrive#410). A flagged file in
`owner_only` stays refused even then: Google lets only the owner acknowledge the risk, and
ignores anyone else's acknowledgement (rclone's documentation of --drive-acknowledge-abuse).
Downloads can answer wrong bytes (`corrupt`, see folder.Corruption).

Try the CLI offline:  python -m tests.fakes.gdrive --port 8900 --sample
"""

from __future__ import annotations

import argparse
import base64
import binascii
import html
import io
import json
import re
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from tests.fakes.folder import (
    Corruption,
    FakeFile,
    FakeFolder,
    add_file,
    big_folder,
    remove_file,
    sample_folder,
)

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
SIGN_IN = "https://accounts.google.com/ServiceLogin?service=wise&passive=1209600&continue="
_Q = re.compile(r"\s*'([^'\\]+)'\s+in\s+parents(?:\s+and\s+trashed\s*=\s*false)?\s*")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeDrive:
    """Everything the app serves, and every request it saw (for assertions)."""

    folders: list[FakeFolder]
    api_key: str | None
    large_file_threshold: int
    resource_keys: dict[str, str] = field(default_factory=dict)
    quota_exceeded: Collection[str] = ()
    abusive: Collection[str] = ()
    owner_only: Collection[str] = ()
    corruption: Corruption = field(default_factory=Corruption)
    requests: list[RecordedRequest] = field(default_factory=list)
    nodes: dict[str, tuple[FakeFile | FakeFolder, FakeFolder]] = field(default_factory=dict)
    _md5: dict[tuple[str, int | None, bytes], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for root in self.folders:
            self.nodes[root.id] = (root, root)
            for _, node in root.walk():
                self.nodes[node.id] = (node, root)

    def calls(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    {k.lower(): v for k, v in request.headers.items()},
                )
            )

    def lookup(self, node_id: str, sent_keys: dict[str, str]) -> FakeFile | FakeFolder | None:
        """The node if it exists, is in a public folder and its resource key (if any) was sent."""
        found = self.nodes.get(node_id)
        if found is None or not found[1].public:
            return None
        required = self.resource_keys.get(node_id)
        if required is not None and sent_keys.get(node_id) != required:
            return None
        return found[0]

    def exists(self, node_id: str) -> bool:
        return node_id in self.nodes

    def mime(self, node: FakeFile | FakeFolder) -> str:
        if isinstance(node, FakeFolder):
            return FOLDER_MIME
        return SHORTCUT_MIME if node.shortcut_to else node.mime_type

    def md5(self, file: FakeFile) -> str:
        # By content too: a test may change a file at its source, as people do.
        key = (file.id, file.size, file.content)
        if key not in self._md5:
            self._md5[key] = file.md5
        return self._md5[key]

    def add(self, parent: FakeFolder, file: FakeFile) -> None:
        """A file uploaded to a served folder while the server runs."""
        root = next(r for r in self.folders if r is parent or any(n is parent for _, n in r.walk()))
        with self._lock:
            add_file(root, parent, file)
            self.nodes[file.id] = (file, root)

    def remove(self, file: FakeFile) -> None:
        """A file deleted from a served folder while the server runs: not found any more."""
        with self._lock:
            _, root = self.nodes.pop(file.id)
            remove_file(root, file)

    def resource(self, node: FakeFile | FakeFolder) -> dict[str, Any]:
        """A Drive API `File` resource, with the fields Drive fills for this kind of item."""
        mime = self.mime(node)
        data: dict[str, Any] = {"kind": "drive#file", "id": node.id, "name": node.name}
        data["mimeType"] = mime
        if node.id in self.resource_keys:
            data["resourceKey"] = self.resource_keys[node.id]
        if isinstance(node, FakeFile) and node.shortcut_to:
            target = self.nodes.get(node.shortcut_to)
            details = {"targetId": node.shortcut_to}
            if target is not None:
                details["targetMimeType"] = self.mime(target[0])
            if node.shortcut_to in self.resource_keys:
                details["targetResourceKey"] = self.resource_keys[node.shortcut_to]
            data["shortcutDetails"] = details
        elif isinstance(node, FakeFile) and not mime.startswith("application/vnd.google-apps."):
            data["size"] = str(node.length)  # Drive sends int64 as a string
            data["md5Checksum"] = self.md5(node)
            metadata = _image_metadata(node)
            if metadata:
                data["imageMediaMetadata"] = metadata
        return data


def _image_metadata(file: FakeFile) -> dict[str, Any] | None:
    if not file.mime_type.startswith("image/") or file.size is not None:
        return None
    try:
        with Image.open(io.BytesIO(file.content)) as image:
            return {"width": image.width, "height": image.height}
    except Exception:  # not really an image: Drive leaves the metadata out
        return None


def _api_error(status: int, message: str, reason: str, **extra: Any) -> JSONResponse:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason, **extra}],
    }
    return JSONResponse({"error": error}, status_code=status)


def _key_error(drive: FakeDrive, request: Request) -> JSONResponse | None:
    if drive.api_key is None:
        return None
    sent = request.query_params.get("key") or request.headers.get("x-goog-api-key")
    if not sent:
        return JSONResponse(
            {
                "error": {
                    "code": 403,
                    "message": "Method doesn't allow unregistered callers (callers without "
                    "established identity). Please use API Key or other form of API consumer "
                    "identity to call this API.",
                    "errors": [
                        {
                            "message": "The request is missing a valid API key.",
                            "domain": "global",
                            "reason": "forbidden",
                        }
                    ],
                    "status": "PERMISSION_DENIED",
                }
            },
            status_code=403,
        )
    if sent != drive.api_key:
        message = "API key not valid. Please pass a valid API key."
        return JSONResponse(
            {
                "error": {
                    "code": 400,
                    "message": message,
                    "errors": [{"message": message, "domain": "global", "reason": "badRequest"}],
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "drive.googleapis.com"},
                        }
                    ],
                }
            },
            status_code=400,
        )
    return None


def _sent_resource_keys(request: Request) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in request.headers.get("x-goog-drive-resource-keys", "").split(","):
        item_id, _, key = pair.strip().partition("/")
        if item_id and key:
            keys[item_id] = key
    if request.query_params.get("id") and request.query_params.get("resourcekey"):
        keys[request.query_params["id"]] = request.query_params["resourcekey"]
    return keys


def _not_found(node_id: str) -> JSONResponse:
    message = f"File not found: {node_id}."
    return _api_error(404, message, "notFound", location="fileId", locationType="parameter")


def _invalid(location: str, message: str = "Invalid Value") -> JSONResponse:
    return _api_error(400, message, "invalid", location=location, locationType="parameter")


def _page_token(folder_id: str, offset: int) -> str:
    raw = json.dumps({"f": folder_id, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_offset(token: str, folder_id: str) -> int | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict) or data.get("f") != folder_id:
        return None
    offset = data.get("o")
    return offset if isinstance(offset, int) and offset >= 0 else None


def _send_file(
    request: Request, drive: FakeDrive, file: FakeFile, headers: dict[str, str]
) -> Response:
    """The file's bytes, streamed in blocks, honouring a single Range."""
    total = file.length
    start, end = 0, total
    status = 200
    spec = request.headers.get("range")
    if spec:
        match = _RANGE.fullmatch(spec.strip())
        if not match or (not match.group(1) and not match.group(2)):
            return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})
        if match.group(1):
            start = int(match.group(1))
            end = min(total, int(match.group(2)) + 1) if match.group(2) else total
        else:
            start = max(0, total - int(match.group(2)))
        if start >= total or start >= end:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})
        status = 206
        headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{total}"}

    return StreamingResponse(
        drive.corruption.body(file, start, end),
        status_code=status,
        media_type=file.mime_type,
        headers={**headers, "Content-Length": str(end - start), "Accept-Ranges": "bytes"},
    )


# -- Drive API v3 ----------------------------------------------------------------------------


async def _files_list(request: Request) -> Response:
    drive: FakeDrive = request.app.state.drive
    drive.record(request)
    if (error := _key_error(drive, request)) is not None:
        return error
    match = _Q.fullmatch(request.query_params.get("q", ""))
    if not match:
        return _invalid("q")
    folder_id = match.group(1)
    try:
        page_size = int(request.query_params.get("pageSize", "100"))
    except ValueError:
        return _invalid("pageSize")
    if not 1 <= page_size <= 1000:
        return _invalid(
            "pageSize", f"Invalid value '{page_size}'. Values must be within the range: [1, 1000]"
        )
    folder = drive.lookup(folder_id, _sent_resource_keys(request))
    if folder is None:
        return _not_found(folder_id)
    children = folder.children if isinstance(folder, FakeFolder) else []
    offset = 0
    if request.query_params.get("pageToken"):
        found = _page_offset(request.query_params["pageToken"], folder_id)
        if found is None:
            return _invalid("pageToken")
        offset = found
    page = children[offset : offset + page_size]
    body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
    if offset + page_size < len(children):
        body["nextPageToken"] = _page_token(folder_id, offset + page_size)
    body["files"] = [drive.resource(node) for node in page]
    return JSONResponse(body)


async def _files_get(request: Request) -> Response:
    drive: FakeDrive = request.app.state.drive
    drive.record(request)
    if (error := _key_error(drive, request)) is not None:
        return error
    node_id = request.path_params["file_id"]
    node = drive.lookup(node_id, _sent_resource_keys(request))
    if node is None:
        return _not_found(node_id)
    if request.query_params.get("alt") != "media":
        return JSONResponse(drive.resource(node))
    if (
        isinstance(node, FakeFolder)
        or node.shortcut_to
        or drive.mime(node).startswith("application/vnd.google-apps.")
    ):
        return _api_error(
            403,
            "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
            "fileNotDownloadable",
            location="alt",
            locationType="parameter",
        )
    acknowledged = request.query_params.get("acknowledgeAbuse") == "true"
    if node.id in drive.abusive and (not acknowledged or node.id in drive.owner_only):
        return _api_error(
            403,
            "This file has been identified as malware or spam and cannot be downloaded.",
            "cannotDownloadAbusiveFile",
        )
    if acknowledged and node.id not in drive.abusive:
        return _api_error(
            403, "This file has not been flagged for abuse.", "invalidAbuseAcknowledgment"
        )
    return _send_file(request, drive, node, {})


# -- public web pages ------------------------------------------------------------------------

_ICON = "https://drive-thirdparty.googleusercontent.com/{size}/type/{mime}"
_DOCS_PATHS = {
    "application/vnd.google-apps.document": "document",
    "application/vnd.google-apps.spreadsheet": "spreadsheets",
    "application/vnd.google-apps.presentation": "presentation",
}


def _entry_html(drive: FakeDrive, node: FakeFile | FakeFolder) -> str:
    mime = drive.mime(node)
    key = drive.resource_keys.get(node.id)
    if isinstance(node, FakeFolder):
        href = f"https://drive.google.com/drive/folders/{node.id}"
        href += f"?resourcekey={key}" if key else ""
    elif mime in _DOCS_PATHS:
        href = f"https://docs.google.com/{_DOCS_PATHS[mime]}/d/{node.id}/edit?usp=drive_web"
    else:
        href = f"https://drive.google.com/file/d/{node.id}/view?usp=drive_web"
        href += f"&amp;resourcekey={key}" if key else ""
    big_icon = _ICON.format(size=128, mime=mime)
    # Folders have no small list icon in captured pages; files do.
    list_icon = (
        ""
        if isinstance(node, FakeFolder)
        else f'<div class="flip-entry-list-icon"><img src="{_ICON.format(size=16, mime=mime)}"'
        ' alt=""/></div>'
    )
    return (
        f'<div class="flip-entry" id="entry-{node.id}" tabindex="0" role="link">'
        f'<div class="flip-entry-info"><a href="{href}" target="_blank">'
        '<div class="flip-entry-visual"><div class="flip-entry-visual-card">'
        f'<div class="flip-entry-icon"><img src="{big_icon}" alt=""/></div></div></div>'
        f'{list_icon}<div class="flip-entry-title">{html.escape(node.name)}</div></a></div>'
        '<div class="flip-entry-last-modified"><div>Sep 29</div></div></div>'
    )


def _folder_page(drive: FakeDrive, folder: FakeFolder) -> str:
    entries = "".join(_entry_html(drive, child) for child in folder.children)
    return (
        '<!DOCTYPE html><html><head><meta http-equiv="content-type" content="text/html; '
        f'charset=UTF-8"><title>{html.escape(folder.name)}</title>'
        '<link rel="stylesheet" href="https://drive.google.com/static/doclist/client/css/'
        '4152783537-folderlandingpage.css"></head><body><div class="flip-view-container">'
        '<div class="flip-list-header"><div role="heading" aria-level="2" '
        'class="flip-list-title-header">TITLE</div><div role="heading" aria-level="2" '
        'class="flip-list-last-modified-header">LAST MODIFIED</div></div>'
        f'<div class="flip-entries">{entries}</div></div>'
        f"<script>var config = {{tid: '{folder.id}', locale: 'en', rtl: false}};</script>"
        "</body></html>"
    )


_MISSING_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - File does not exist</title></head><body>"
    '<div class="uc-main"><p class="uc-error-caption">Sorry, the file you have requested does '
    'not exist.</p><p class="uc-error-subcaption">Make sure that you have the correct URL and '
    "that the file exists.</p></div></body></html>"
)
_QUOTA_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    '<div class="uc-main"><p class="uc-error-caption">Sorry, you can&#39;t view or download this '
    'file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or '
    "downloaded this file recently. Please try accessing the file again later. If the file you "
    "are trying to access is particularly large or is shared with many people, it may take up "
    "to 24 hours to be able to view or download the file.</p></div></body></html>"
)


def _sign_in(request: Request) -> RedirectResponse:
    return RedirectResponse(SIGN_IN + quote(str(request.url), safe=""), status_code=302)


def _virus_scan_page(request: Request, file: FakeFile, token: str, key: str | None) -> str:
    action = str(request.base_url).rstrip("/") + "/download"
    size = f"{file.length / 1024 / 1024:.0f}M"
    key_input = f'<input type="hidden" name="resourcekey" value="{key}">' if key else ""
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
        '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>'
        '<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive '
        'can\'t scan this file for viruses.</p><p class="uc-warning-subcaption">'
        f'<span class="uc-name-size"><a href="/open?id={file.id}">{html.escape(file.name)}</a> '
        f"({size})</span> is too large for Google to scan for viruses. Would you still like to "
        f'download this file?</p><form id="download-form" action="{action}" method="get">'
        '<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button '
        'jfk-button-action" value="Download anyway"/>'
        f'<input type="hidden" name="id" value="{file.id}">'
        '<input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t">'
        f'<input type="hidden" name="uuid" value="{token}">{key_input}'
        "</form></div></div></body></html>"
    )


async def _embedded_folder_view(request: Request) -> Response:
    drive: FakeDrive = request.app.state.drive
    drive.record(request)
    folder_id = request.query_params.get("id", "")
    if not drive.exists(folder_id):
        return HTMLResponse(_MISSING_PAGE, status_code=404)
    folder = drive.lookup(folder_id, _sent_resource_keys(request))
    if folder is None:
        return _sign_in(request)
    if not isinstance(folder, FakeFolder):
        return HTMLResponse(_MISSING_PAGE, status_code=404)
    return HTMLResponse(_folder_page(drive, folder))


async def _file_view(request: Request) -> Response:
    drive: FakeDrive = request.app.state.drive
    drive.record(request)
    node_id = request.path_params["file_id"]
    if not drive.exists(node_id):
        return HTMLResponse(_MISSING_PAGE, status_code=404)
    node = drive.lookup(node_id, _sent_resource_keys(request))
    if node is None:
        return _sign_in(request)
    if isinstance(node, FakeFile) and node.shortcut_to:
        target = drive.nodes.get(node.shortcut_to)
        if target is not None and isinstance(target[0], FakeFolder):
            location = f"https://drive.google.com/drive/folders/{node.shortcut_to}"
        else:
            location = f"https://drive.google.com/file/d/{node.shortcut_to}/view"
        return RedirectResponse(location, status_code=302)
    return HTMLResponse(f"<html><head><title>{html.escape(node.name)} - Google Drive</title>")


async def _download(request: Request) -> Response:
    drive: FakeDrive = request.app.state.drive
    drive.record(request)
    file_id = request.query_params.get("id", "")
    if not drive.exists(file_id):
        return HTMLResponse(_MISSING_PAGE, status_code=404)
    node = drive.lookup(file_id, _sent_resource_keys(request))
    if node is None:
        return _sign_in(request)
    if (
        isinstance(node, FakeFolder)
        or node.shortcut_to
        or node.mime_type.startswith("application/vnd.google-apps.")
    ):
        return HTMLResponse(_MISSING_PAGE, status_code=404)
    if file_id in drive.quota_exceeded:
        return HTMLResponse(_QUOTA_PAGE)
    token = str(uuid.uuid5(uuid.NAMESPACE_URL, "download:" + file_id))
    confirmed = request.query_params.get("confirm") and request.query_params.get("uuid") == token
    if node.length > drive.large_file_threshold and not confirmed:
        key = drive.resource_keys.get(file_id)
        return HTMLResponse(_virus_scan_page(request, node, token, key))
    # Like Drive: the plain filename= is printable ASCII only; filename*= has the real name.
    ascii_name = "".join(c if " " <= c < "\x7f" and c != '"' else "_" for c in node.name)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(node.name)}"
    return _send_file(request, drive, node, {"Content-Disposition": disposition})


def make_gdrive_app(
    folders: list[FakeFolder],
    api_key: str | None = "test-key",
    large_file_threshold: int = 1024 * 1024,
    *,
    resource_keys: dict[str, str] | None = None,
    quota_exceeded: Collection[str] = (),
    abusive: Collection[str] = (),
    owner_only: Collection[str] = (),
    corrupt: Mapping[str, int] | None = None,
) -> Starlette:
    """A fake Drive serving `folders` (shared "Anyone with the link" unless `public=False`).

    api_key=None accepts API requests without checking the key. `resource_keys` maps item ids
    to the resource key that must be sent to reach them; `quota_exceeded` lists file ids whose
    public download answers Drive's "too many users" page; `abusive` lists file ids Drive
    flagged as malware or spam, and `owner_only` those of them it refuses even with the risk
    acknowledged; `corrupt` maps file ids to how many of their downloads answer wrong bytes
    (folder.Corruption). `app.state.drive` (a FakeDrive) records every request.
    """
    app = Starlette(
        routes=[
            Route("/drive/v3/files", _files_list),
            Route("/drive/v3/files/{file_id}", _files_get),
            Route("/embeddedfolderview", _embedded_folder_view),
            Route("/file/d/{file_id}/view", _file_view),
            Route("/download", _download),
        ]
    )
    app.state.drive = FakeDrive(
        folders,
        api_key,
        large_file_threshold,
        resource_keys=dict(resource_keys or {}),
        quota_exceeded=set(quota_exceeded),
        abusive=set(abusive),
        owner_only=set(owner_only),
        corruption=Corruption(corrupt),
    )
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve a fake Google Drive folder.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--sample", action="store_true", help="the sample folder (default)")
    what.add_argument("--images", type=int, metavar="N", help="N small images in one folder")
    parser.add_argument("--api-key", default="test-key", help="key the fake API expects")
    args = parser.parse_args(argv)

    folder = big_folder(args.images) if args.images else sample_folder()[0]
    base = f"http://{args.host}:{args.port}"
    print(f"Fake Google Drive serving {folder.name!r} ({len(folder.files())} files) at {base}")
    print(f"Folder URL: https://drive.google.com/drive/folders/{folder.id}")
    print("Environment for imageimport:")
    for name in ("GDRIVE_API_URL", "GDRIVE_WEB_URL", "GDRIVE_DOWNLOAD_URL"):
        print(f"  export {name}={base}")
    print(f"  export GOOGLE_API_KEY={args.api_key}   # leave unset to use the key-less route")
    uvicorn.run(
        make_gdrive_app([folder], args.api_key), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
