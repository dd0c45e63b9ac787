"""Google Drive links: which links are folder links, and the folder each one names."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from imageimport.errors import InvalidSourceURL
from imageimport.sources.base import MAX_LINK_ID_CHARS, FolderRef
from imageimport.sources.gdrive.common import PROVIDER

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
