"""Google Drive without an API key: Drive's public web pages, as gdown-style tools read them.

Listing reads each folder's embedded view, `{gdrive_web_url}/embeddedfolderview?id=<ID>`, the
page Drive serves for embedding a folder in an iframe. Every child is a
`<div class="flip-entry" id="entry-<ID>">` holding a link (`/drive/folders/<ID>` for a folder,
`/file/d/<ID>/view` for a file, docs.google.com for Docs editors files), a small icon whose URL
ends in `/type/<mime type>`, and a `flip-entry-title`. Downloads go to
`{gdrive_download_url}/download?id=<ID>&export=download&confirm=t`; for files Google cannot
virus-scan it answers with a "Download anyway" page whose `<form id="download-form">` (hidden
id, export, confirm, uuid) is submitted to get the bytes.

Limits of this route (set GOOGLE_API_KEY to use the Drive API instead):
- The pages are not an API: Google may change them without notice. A folder page without
  the `flip-entries` list is reported as an error, never read as an empty folder.
- No sizes and no checksums; the mime type comes from the entry's icon, when it has one.
- No pagination. One capture listed 60 entries where the regular folder page stops at 50
  (gdown's limit), but whether the embedded view has an upper bound is unverified.
- Shortcuts are listed under their own id; they are resolved by the redirect of
  `/file/d/<shortcut id>/view` to the target (observed behaviour, not documented).
- Google Docs, Sheets, Slides... have no bytes to download and are left out.
- Drive limits downloads of popular files ("Too many users have viewed or downloaded this
  file recently"); such files fail as transient and are retried later by the pipeline.
- A private folder or file answers with a redirect to accounts.google.com (sign-in), which
  the host guard refuses to follow; that is reported as "not shared publicly".
"""

from __future__ import annotations

import builtins
import logging
import re
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import httpx

from imageimport.errors import (
    ForbiddenHost,
    ImageImportError,
    ItemError,
    SourceUnavailable,
    TransientError,
    UnusableAnswer,
)
from imageimport.settings import Settings
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.budget import SlotBook
from imageimport.sources.gdrive.common import (
    FOLDER_MIME,
    PROVIDER,
    SHORTCUT_MIME,
    DriveAnswer,
    classify,
    drive_budget,
    file_gone,
    file_unavailable,
    folder_unavailable,
    is_google_apps_type,
    quota_used_up,
)
from imageimport.sources.http import (
    GiveUpNow,
    make_http_client,
    open_stream,
    read_small,
    retried_download,
    with_retries,
)
from imageimport.sources.listing import (
    ListingBudget,
    SeenIds,
    join_path,
    refused_file,
    refused_folder,
    too_long,
)

log = logging.getLogger(__name__)

_ID = r"[A-Za-z0-9_-]{10,}"
_FOLDER_HREF = re.compile(rf"/folders/({_ID})")
_FILE_HREF = re.compile(rf"/(?:file/)?d/({_ID})")
_DOCS_HREF = re.compile(r"docs\.google\.com/|/(document|spreadsheets|presentation|forms|drawings)/")
_MAX_PAGE_BYTES = 64 * 1024 * 1024
_SIGN_IN_HOST = "accounts.google.com"
_QUOTA_MARKERS = ("too many users have viewed or downloaded", "quota exceeded")
_MISSING_MARKERS = ("does not exist", "file not found")


# -- the folder page ---------------------------------------------------------------------------


@dataclass
class PageEntry:
    """One `flip-entry` of an embedded folder view."""

    entry_id: str = ""
    href: str = ""
    icon: str = ""
    title: str = ""

    @property
    def item_id(self) -> str:
        match = _FOLDER_HREF.search(self.href) or _FILE_HREF.search(self.href)
        if match:
            return match.group(1)
        return self.entry_id.removeprefix("entry-")

    @property
    def is_folder(self) -> bool:
        return bool(_FOLDER_HREF.search(self.href)) or self.icon_mime == FOLDER_MIME

    @property
    def is_docs_editors_file(self) -> bool:
        return bool(_DOCS_HREF.search(self.href))

    @property
    def icon_mime(self) -> str | None:
        """The mime type Drive draws the icon for (…/16/type/image/jpeg), if any."""
        _, found, rest = self.icon.partition("/type/")
        if not found:
            return None
        return unquote(rest.split("?")[0]).strip("/") or None

    @property
    def resource_key(self) -> str | None:
        values = parse_qs(urlsplit(self.href).query).get("resourcekey")
        return values[0] if values else None


class FolderPageParser(HTMLParser):
    """Collects the entries of an embedded folder view; `found_list` tells whether the page
    had the entries list at all (a sign-in or error page does not)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[PageEntry] = []
        self.found_list = False
        self._divs: list[set[str]] = []  # classes of the open <div>s
        self._entry_depth: int | None = None  # len(self._divs) when the current entry opened
        self._title_depth: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        classes = set(attributes.get("class", "").split())
        current = self.entries[-1] if self._entry_depth is not None else None
        if tag == "div":
            self._divs.append(classes)
            if "flip-entries" in classes:
                self.found_list = True
            if "flip-entry" in classes and self._entry_depth is None:
                self.entries.append(PageEntry(entry_id=attributes.get("id", "")))
                self._entry_depth = len(self._divs)
            elif current is not None and "flip-entry-title" in classes:
                self._title_depth = len(self._divs)
        elif current is not None and tag == "a" and not current.href:
            current.href = attributes.get("href", "")
        elif current is not None and tag == "img" and "/type/" in attributes.get("src", ""):
            # The small list icon names the type best; the big one is only a fallback.
            in_list_icon = any("flip-entry-list-icon" in c for c in self._divs)
            current.icon = current.icon if current.icon and not in_list_icon else attributes["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag != "div" or not self._divs:
            return
        if self._title_depth == len(self._divs):
            self._title_depth = None
        if self._entry_depth == len(self._divs):
            self._entry_depth = None
        self._divs.pop()

    def handle_data(self, data: str) -> None:
        if self._title_depth is not None and self._entry_depth is not None:
            self.entries[-1].title += data


def parse_folder_page(html: str) -> tuple[bool, list[PageEntry]]:
    parser = FolderPageParser()
    parser.feed(html)
    parser.close()
    for entry in parser.entries:
        entry.title = entry.title.strip()
    return parser.found_list, [e for e in parser.entries if e.item_id]


# -- the "can't scan for viruses" page --------------------------------------------------------


@dataclass
class DownloadForm:
    action: str = ""
    method: str = "get"
    fields: dict[str, str] = field(default_factory=dict)


class DownloadFormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.form: DownloadForm | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        # "downloadForm" is the id the older drive.google.com/uc page used.
        if tag == "form" and attributes.get("id") in ("download-form", "downloadForm"):
            self.form = DownloadForm(
                action=attributes.get("action", ""),
                method=(attributes.get("method") or "get").lower(),
            )
            self._inside = True
        elif tag == "input" and self._inside and self.form is not None:
            name = attributes.get("name")
            if name and attributes.get("type", "text").lower() != "submit":
                self.form.fields[name] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def parse_download_form(html: str) -> DownloadForm | None:
    parser = DownloadFormParser()
    parser.feed(html)
    parser.close()
    return parser.form if parser.form and parser.form.action else None


def _is_sign_in(refused: ForbiddenHost) -> bool:
    """Private items redirect to Google's sign-in page; any other host is something else."""
    return refused.host == _SIGN_IN_HOST


def _page_answer(response: httpx.Response) -> DriveAnswer:
    return DriveAnswer(response.status_code, response.headers.get("Retry-After"), page=True)


def _is_web_page(response: httpx.Response) -> bool:
    # Files come with Content-Disposition: attachment, even HTML files; pages never do.
    content_type = response.headers.get("content-type", "").lower()
    return "content-disposition" not in response.headers and content_type.startswith("text/html")


# -- the source --------------------------------------------------------------------------------


class DrivePublicSource(Source):
    provider: ClassVar[str] = PROVIDER

    def __init__(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> None:
        super().__init__(ref, settings, slots)
        self._web = settings.gdrive_web_url
        self._download = settings.gdrive_download_url
        self._http = make_http_client(settings, drive_budget(settings, self.slots, None))

    def close(self) -> None:
        self._http.close()

    # -- listing -----------------------------------------------------------------------------

    def list(self) -> Iterator[RemoteFile]:
        budget = ListingBudget(self.settings, "Google Drive")
        root = self.ref.folder_id
        budget.folder()
        queue: deque[tuple[str, str, str | None]] = deque([(root, "", self.ref.resource_key)])
        visited = SeenIds(root)  # shortcuts can make folder loops
        emitted = SeenIds()
        while queue:
            folder_id, prefix, resource_key = queue.popleft()
            shown = repr(prefix) if prefix else self.ref.url
            budget.page(folder_id, None, shown)
            try:
                entries = self._folder_entries(folder_id, resource_key, shown)
            except SourceUnavailable as error:
                if not prefix:
                    raise
                log.warning("Skipping Google Drive subfolder %r: %s", prefix, error)
                continue
            for entry in entries:
                item_id, is_folder, mime = entry.item_id, entry.is_folder, entry.icon_mime
                resource_key_of_item = entry.resource_key
                if entry.is_docs_editors_file:
                    continue  # Docs, Sheets...: no bytes to import
                name = entry.title or item_id
                path = join_path(prefix, name)
                problem = too_long(item_id, "Google Drive id") or too_long(
                    resource_key_of_item, "resource key"
                )
                if problem is None and mime == SHORTCUT_MIME:
                    # Each shortcut costs a request of its own.
                    budget.page(item_id, None, repr(path))
                    target = self._shortcut_target(item_id)
                    if target is None:
                        log.warning(
                            "Skipping the unresolvable Google Drive shortcut %r", entry.title
                        )
                        continue
                    item_id, is_folder = target
                    mime, resource_key_of_item = None, None
                    problem = too_long(item_id, "Google Drive id")
                if is_folder:
                    if problem:
                        yield refused_folder(item_id, name, path, problem)
                    elif visited.add(item_id):
                        budget.folder()
                        queue.append((item_id, path, resource_key_of_item))
                    continue
                if is_google_apps_type(mime):
                    continue
                if problem:
                    yield refused_file(item_id, name, path, problem)
                    continue
                if not emitted.add(item_id):
                    continue
                yield RemoteFile(
                    id=item_id,
                    name=name,
                    path=path,
                    mime_type=mime,
                    extra={"resource_key": resource_key_of_item} if resource_key_of_item else {},
                )

    def _folder_entries(
        self, folder_id: str, resource_key: str | None, shown: str
    ) -> builtins.list[PageEntry]:
        params = {"id": folder_id}
        if resource_key:
            params["resourcekey"] = resource_key

        def fetch() -> str:
            url = f"{self._web}/embeddedfolderview"
            what = f"Listing the Google Drive folder {shown}"
            try:
                # Streamed and cut at the limit: a page is never read whole into memory.
                with open_stream(self._http, "GET", url, what, params=params) as response:
                    page = read_small(response, what, _MAX_PAGE_BYTES + 1)
            except ForbiddenHost as refused:
                if not _is_sign_in(refused):
                    raise SourceUnavailable(
                        f"Listing the Google Drive folder {shown}: {refused}"
                    ) from None
                raise SourceUnavailable(
                    f"The Google Drive folder {shown} is not shared publicly: Google asks to "
                    "sign in. Share it with 'Anyone with the link'."
                ) from None
            if response.status_code >= 400:
                answer = _page_answer(response)
                raise classify(answer, what) or folder_unavailable(answer, shown)
            if len(page) > _MAX_PAGE_BYTES:
                raise SourceUnavailable(
                    f"Google Drive's page for the folder {shown} is larger than "
                    f"{_MAX_PAGE_BYTES // 1024 // 1024} MiB; refused."
                )
            return page.decode(response.encoding or "utf-8", "replace")

        found_list, entries = parse_folder_page(with_retries(self.settings, fetch))
        if not found_list:
            raise SourceUnavailable(
                f"Google Drive did not answer with a folder listing for {shown}: the folder "
                "may not be shared publicly, or Google changed the page. Setting "
                "GOOGLE_API_KEY uses the Drive API instead."
            )
        return entries

    def _shortcut_target(self, shortcut_id: str) -> tuple[str, bool] | None:
        """(target id, is a folder): Drive redirects a shortcut's view page to its target."""

        def fetch() -> str:
            url = f"{self._web}/file/d/{shortcut_id}/view"
            what = f"Resolving the Google Drive shortcut {shortcut_id}"
            # Only the redirect's Location matters; no body is read.
            with open_stream(self._http, "GET", url, what, follow_redirects=False) as response:
                return response.headers.get("location", "")

        try:
            location = with_retries(self.settings, fetch)
        except (TransientError, ForbiddenHost, UnusableAnswer):
            return None
        match = _FOLDER_HREF.search(location)
        if match:
            return match.group(1), True
        match = _FILE_HREF.search(location)
        if match and match.group(1) != shortcut_id:
            return match.group(1), False
        return None

    # -- downloading -------------------------------------------------------------------------

    def open(self, file: RemoteFile) -> AbstractContextManager[Iterator[bytes]]:
        what = f"Downloading {file.path!r} from Google Drive"
        params = {"id": file.id, "export": "download", "confirm": "t"}
        if file.extra.get("resource_key"):
            params["resourcekey"] = str(file.extra["resource_key"])

        def start(stack: ExitStack) -> httpx.Response:
            url = f"{self._download}/download"
            response = self._request(stack, "GET", url, what, file, params=params)
            if not _is_web_page(response):
                return response
            page = read_small(response, what).decode("utf-8", "replace")
            form = parse_download_form(page)
            if form is None:
                raise self._page_error(page, file)
            # Submitting the form once is what a browser does; a second page is an error.
            action = urljoin(str(response.url), form.action)
            if form.method == "post":
                response = self._request(stack, "POST", action, what, file, data=form.fields)
            else:
                response = self._request(stack, "GET", action, what, file, params=form.fields)
            if _is_web_page(response):
                raise self._page_error(read_small(response, what).decode("utf-8", "replace"), file)
            return response

        return retried_download(self.settings, start, what)

    def _request(
        self,
        stack: ExitStack,
        method: str,
        url: str,
        what: str,
        file: RemoteFile,
        **kwargs: object,
    ) -> httpx.Response:
        try:
            response = stack.enter_context(open_stream(self._http, method, url, what, **kwargs))
        except ForbiddenHost as refused:
            if not _is_sign_in(refused):
                raise ItemError(f"{what}: {refused}") from None
            raise ItemError(
                f"{file.path!r} is not shared publicly on Google Drive (Google asks to sign in)."
            ) from None
        if response.status_code < 400:
            return response
        answer = _page_answer(response)
        retry = classify(answer, what)
        if retry is not None:
            raise retry
        page = read_small(response, what, 256 * 1024).decode("utf-8", "replace")
        if not answer.gone:
            # The page may say what the status does not: a quota, which passes in hours.
            quota = self._page_error(page, file)
            if isinstance(quota, GiveUpNow):
                raise quota
        raise file_unavailable(answer, file.path)

    def _page_error(self, page: str, file: RemoteFile) -> ImageImportError | GiveUpNow:
        text = re.sub(r"\s+", " ", page).lower()
        if any(marker in text for marker in _QUOTA_MARKERS):
            return quota_used_up(
                f"{file.path!r}: Google Drive says too many users have viewed or downloaded "
                "this file recently; it will be tried again later."
            )
        if any(marker in text for marker in _MISSING_MARKERS):
            return file_gone(file.path)
        return ItemError(
            f"{file.path!r} could not be downloaded: Google Drive answered with a web page "
            "instead of the file, without a download form (the file may not be shared "
            "publicly, or Google changed the page)."
        )
