"""Google Drive: which links are folder links, and which route lists them.

Two routes read a public ("Anyone with the link") folder:
- `gdrive_api.DriveApiSource`, the Drive API v3 with an API key (GOOGLE_API_KEY): exact sizes,
  checksums, shortcuts and pagination; used whenever a key is configured.
- `gdrive_public.DrivePublicSource`, Drive's public web pages, the way tools like gdown work
  without a key; used automatically otherwise (see that module for its limits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Final
from urllib.parse import parse_qs, urlsplit

import httpx

from imageimport.errors import ImageImportError, InvalidSourceURL
from imageimport.settings import Settings, secret
from imageimport.sources.base import MAX_LINK_ID_CHARS, FolderRef, Source, register
from imageimport.sources.http import iter_body, source_errors, with_retries
from imageimport.sources.transfer import watching

PROVIDER = "gdrive"
FOLDER_MIME: Final = "application/vnd.google-apps.folder"
SHORTCUT_MIME: Final = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX: Final = "application/vnd.google-apps."

_ID = re.compile(r"[A-Za-z0-9_-]{10,}")
# A bare id is only taken for a Drive id when it could not be an ordinary word: real ids are
# 19 (shared drives), 28 (old "0B…" ids) or 33+ characters and mix letters and digits.
_BARE_ID = re.compile(r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{19,}")
_RESOURCE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HOSTS = {"drive.google.com", "www.drive.google.com", "docs.google.com"}
_FILE_HOSTS = {"drive.usercontent.google.com"}
# /drive/folders/ID, /drive/u/0/folders/ID, /drive/mobile/folders/ID, /drive/u/1/mobile/folders/ID
_FOLDER_PATH = re.compile(r"/drive(?:/u/\d+)?(?:/mobile)?/folders/([^/]*)/?(?:.*)")
# Links to one of the Docs editors' documents, e.g. /document/d/ID/edit.
_DOCS_PATH = re.compile(r"(?:/a/[^/]+)?/(document|spreadsheets|presentation|forms|drawings)/")
_DOCS_KIND = {
    "document": "a Google Docs document",
    "spreadsheets": "a Google Sheets spreadsheet",
    "presentation": "a Google Slides presentation",
    "forms": "a Google Form",
    "drawings": "a Google Drawing",
}
# Pages of a signed-in user's own Drive, not something anyone else can open.
_OWN_DRIVE_PAGES = {"my-drive", "home", "shared-with-me", "recent", "starred", "trash", "computers"}


def parse_drive_url(url: str) -> FolderRef | None:
    """The folder a pasted Drive link (or bare folder id) points at; None if not a Drive link.

    Raises InvalidSourceURL for Drive links that are not folder links (single files, Docs,
    malformed ids), with a sentence saying what the link is instead.
    """
    text = url.strip().strip("<>\"'").strip()
    if _BARE_ID.fullmatch(text):
        return _folder_ref(_checked_id(text, _shorten(text)), None)
    parts = urlsplit(text if "://" in text else "https://" + text)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or (
        host not in _HOSTS and host not in _FILE_HOSTS
    ):
        return None
    shown = _shorten(text)
    if host in _FILE_HOSTS:
        raise InvalidSourceURL(
            f"{shown!r} is a download link for a single file, not a Google Drive folder link."
        )
    query = parse_qs(parts.query)
    resource_key = _resource_key(query, shown)
    path = re.sub(r"/{2,}", "/", parts.path)

    match = _FOLDER_PATH.fullmatch(path)
    if match:
        return _folder_ref(_checked_id(match.group(1), shown), resource_key)
    if path.rstrip("/") in ("/open", "/folderview", "/embeddedfolderview"):
        ids = query.get("id")
        if not ids:
            raise InvalidSourceURL(f"{shown!r} has no folder id (the id=... part is missing).")
        return _folder_ref(_checked_id(ids[0], shown), resource_key)
    if re.match(r"(?:/a/[^/]+)?/file/d/", path) or path.rstrip("/") == "/uc":
        raise InvalidSourceURL(
            f"{shown!r} is a link to a single file, not a folder. Share the folder that "
            "holds the images and paste the folder's link (https://drive.google.com/drive/"
            "folders/...)."
        )
    docs = _DOCS_PATH.match(path)
    if docs:
        raise InvalidSourceURL(f"{shown!r} is a link to {_DOCS_KIND[docs.group(1)]}, not a folder.")
    page = path.strip("/").split("/")
    if len(page) >= 2 and page[0] == "drive" and page[-1] in _OWN_DRIVE_PAGES:
        raise InvalidSourceURL(
            f"{shown!r} is a page of your own Google Drive, not a shared folder. Open the "
            "folder, choose Share > Copy link, and paste that link."
        )
    raise InvalidSourceURL(
        f"{shown!r} is a Google Drive link but not a folder link; expected "
        "https://drive.google.com/drive/folders/<folder id>."
    )


def canonical_folder_url(folder_id: str, resource_key: str | None = None) -> str:
    url = f"https://drive.google.com/drive/folders/{folder_id}"
    return f"{url}?resourcekey={resource_key}" if resource_key else url


def is_google_apps_type(mime_type: str | None) -> bool:
    """Docs, Sheets, folders, shortcuts...: Drive items that have no bytes to download."""
    return bool(mime_type) and mime_type.startswith(GOOGLE_APPS_PREFIX)


class GiveUpNow(Exception):
    """Wraps an error that must skip the in-call retries (e.g. a download quota that only
    resets in hours): the pipeline retries the item later instead."""

    def __init__(self, error: ImageImportError) -> None:
        super().__init__(str(error))
        self.error = error


def start_stream(
    stack: ExitStack, client: httpx.Client, method: str, url: str, what: str, **kwargs: object
) -> httpx.Response:
    """Open a streamed response whose closing `stack` owns; httpx's errors translated."""
    with source_errors(what):
        return stack.enter_context(client.stream(method, url, **kwargs))  # type: ignore[arg-type]


def read_small(response: httpx.Response, what: str, limit: int = 2 * 1024 * 1024) -> bytes:
    """The start of a body that should be small (an error or a confirmation page)."""
    data = bytearray()
    with source_errors(what, reading=True):
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    return bytes(data[:limit])


@contextmanager
def retried_download(
    settings: Settings, start: Callable[[ExitStack], httpx.Response], what: str
) -> Iterator[Iterator[bytes]]:
    """Establish a download with retries, then hand out its body chunk by chunk.

    Only establishing is retried: once bytes flow, a broken stream surfaces as TransientError
    and the caller retries the whole file.
    """

    def attempt() -> tuple[ExitStack, httpx.Response]:
        stack = ExitStack()
        try:
            return stack, start(stack)
        except BaseException:
            stack.close()
            raise

    try:
        stack, response = with_retries(settings, attempt)
    except GiveUpNow as give_up:
        raise give_up.error from None
    with stack, watching(response):
        yield iter(iter_body(response, what))


def _folder_ref(folder_id: str, resource_key: str | None) -> FolderRef:
    return FolderRef(
        provider=PROVIDER,
        folder_id=folder_id,
        url=canonical_folder_url(folder_id, resource_key),
        resource_key=resource_key,
    )


def _checked_id(candidate: str, shown: str) -> str:
    if len(candidate) > MAX_LINK_ID_CHARS:
        raise InvalidSourceURL(
            f"{shown!r} has a folder id of {len(candidate):,} characters; Google Drive folder "
            f"ids are far shorter (this accepts up to {MAX_LINK_ID_CHARS}). Copy the folder's "
            "link again."
        )
    if not _ID.fullmatch(candidate):
        raise InvalidSourceURL(
            f"{shown!r} does not contain a valid Google Drive folder id (expected 10 or more "
            "letters, digits, '-' or '_' after /folders/); the link may be cut short."
        )
    return candidate


def _resource_key(query: dict[str, list[str]], shown: str) -> str | None:
    values = query.get("resourcekey") or query.get("resourceKey")
    if not values or not values[0]:
        return None
    if len(values[0]) > MAX_LINK_ID_CHARS:
        raise InvalidSourceURL(
            f"{shown!r} has a resourcekey of {len(values[0]):,} characters; real ones are far "
            f"shorter (this accepts up to {MAX_LINK_ID_CHARS})."
        )
    if not _RESOURCE_KEY.fullmatch(values[0]):
        raise InvalidSourceURL(f"{shown!r} has a malformed resourcekey parameter.")
    return values[0]


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GoogleDriveProvider:
    name = PROVIDER

    def parse(self, url: str) -> FolderRef | None:
        return parse_drive_url(url)

    def open(self, ref: FolderRef, settings: Settings) -> Source:
        # Imported here: both modules import this one for the shared helpers above.
        if secret(settings.google_api_key):
            from imageimport.sources.gdrive_api import DriveApiSource

            return DriveApiSource(ref, settings)
        from imageimport.sources.gdrive_public import DrivePublicSource

        return DrivePublicSource(ref, settings)


register(GoogleDriveProvider())
