"""A Dropbox shared folder read through the official API (needs app credentials).

Listing walks the folder tree ourselves (`recursive=True` is refused for shared links);
files are downloaded one by one with `sharing/get_shared_link_file`.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit

import dropbox
import requests
from dropbox import exceptions as dbx_errors
from dropbox.files import FileMetadata, FolderMetadata, ListFolderResult, SharedLink
from dropbox.session import HOST_API, HOST_CONTENT, HOST_NOTIFY
from requests.adapters import HTTPAdapter

from imageimport.errors import (
    ForbiddenHost,
    ImageImportError,
    ItemError,
    SourceUnavailable,
    TransientError,
    UnusableAnswer,
)
from imageimport.settings import Settings, secret
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.budget import RequestBudget, SlotBook
from imageimport.sources.checksums import DROPBOX_CONTENT_HASH
from imageimport.sources.dropbox.common import CREDENTIALS_REJECTED, answer_error, dropbox_budget
from imageimport.sources.http import CHUNK_SIZE, MAX_REDIRECTS, allowed_hosts, with_retries
from imageimport.sources.listing import (
    MAX_SOURCE_PATH_CHARS,
    ListingBudget,
    refused_file,
    refused_folder,
    too_long,
)
from imageimport.sources.transfer import watching

log = logging.getLogger(__name__)
T = TypeVar("T")

# Transport failures worth another try: the connection, not the request, went wrong.
_TRANSIENT_REQUESTS_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class _HostGuardAdapter(HTTPAdapter):
    """Refuses any request (redirects included) to a host that is not a configured endpoint,
    and any answer whose body is compressed: the session asks for uncompressed ones, because
    requests reads JSON answers (and redirects' bodies) whole and urllib3 inflates up to five
    layers of them, so 2 KB marked `gzip, gzip` would become gigabytes. Judged on the
    headers, before a byte of the body is read."""

    def __init__(self, settings: Settings, budget: RequestBudget, **kwargs: Any) -> None:
        self._exact, _ = allowed_hosts(settings)
        self._budget = budget
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        if f"{parts.scheme.lower()}://{parts.netloc.lower()}" not in self._exact:
            raise ForbiddenHost(parts.hostname or parts.netloc)
        # Every request the SDK makes passes here: API calls, downloads, token refreshes.
        self._budget.take()
        response = super().send(request, *args, **kwargs)
        coding = response.headers.get("Content-Encoding", "").strip().lower()
        if coding not in ("", "identity"):
            response.close()
            raise UnusableAnswer(
                f"Dropbox answered with a compressed body (Content-Encoding: {coding[:100]}) "
                "although it was asked for an uncompressed one; refused."
            )
        return response


class ConfiguredDropbox(dropbox.Dropbox):
    """The SDK client, talking to the configured API/content/token endpoints.

    The SDK builds `https://{host}/2/{route}` and `https://{api host}/oauth2/token`
    itself; here `_host_map` holds base URLs (scheme included) instead of host names.
    Its own retry loops are switched off: `with_retries` does that, honouring our limits.
    """

    def __init__(self, settings: Settings, budget: RequestBudget) -> None:
        session = requests.Session()
        session.headers["Accept-Encoding"] = "identity"
        session.max_redirects = MAX_REDIRECTS
        adapter = _HostGuardAdapter(settings, budget, pool_connections=4, pool_maxsize=64)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        super().__init__(
            oauth2_refresh_token=secret(settings.dropbox_refresh_token),
            app_key=secret(settings.dropbox_app_key),
            app_secret=secret(settings.dropbox_app_secret),
            max_retries_on_error=0,
            max_retries_on_rate_limit=0,
            timeout=settings.http_timeout_seconds,
            session=session,
            user_agent="imageimport/0.1",
        )
        self._api_url = settings.dropbox_api_url
        self._host_map = {
            HOST_API: settings.dropbox_api_url,
            HOST_CONTENT: settings.dropbox_content_url,
            HOST_NOTIFY: settings.dropbox_api_url,
        }

    def _get_route_url(self, hostname: str, route_name: str) -> str:
        return f"{hostname}/{self._API_VERSION}/{route_name}"

    def refresh_access_token(self, host: str | None = None, scope: Any = None) -> None:
        body = {
            "grant_type": "refresh_token",
            "refresh_token": self._oauth2_refresh_token,
            "client_id": self._app_key,
            "client_secret": self._app_secret,
        }
        response = self._session.post(
            f"{self._api_url}/oauth2/token", data=body, timeout=self._timeout
        )
        if response.status_code in (400, 401, 403):
            # invalid_grant (refresh token) or invalid_client (key/secret); the body may
            # echo parts of the request, so it is never shown.
            raise SourceUnavailable(CREDENTIALS_REJECTED)
        self.raise_dropbox_error_for_resp(response)
        token = response.json()
        self._oauth2_access_token = token["access_token"]
        self._oauth2_access_token_expiration = datetime.utcnow() + timedelta(
            seconds=int(token["expires_in"])
        )


class DropboxApiSource(Source):
    provider = "dropbox"
    checksums: ClassVar[Mapping[str, str]] = {DROPBOX_CONTENT_HASH: "Dropbox"}

    def __init__(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> None:
        super().__init__(ref, settings, slots)
        budget = dropbox_budget(settings, self.slots, secret(settings.dropbox_app_key))
        self._client = ConfiguredDropbox(settings, budget)
        self._link = SharedLink(url=ref.url)

    def list(self) -> Iterator[RemoteFile]:
        budget = ListingBudget(self.settings, "Dropbox")
        budget.folder()
        pending = [""]  # folder paths relative to the shared folder, "" is the folder itself
        while pending:
            folder = pending.pop()
            try:
                yield from self._list_one(folder, pending, budget)
            except _SubfolderGone:
                log.warning("Dropbox subfolder %r vanished while listing; skipped.", folder)

    def _list_one(
        self, folder: str, pending: builtins.list[str], budget: ListingBudget
    ) -> Iterator[RemoteFile]:
        api_path = f"/{folder}" if folder else ""
        shown = repr(folder) if folder else "shared with this link"
        budget.page(folder, None, shown)
        page: ListFolderResult = self._call(
            lambda: self._client.files_list_folder(path=api_path, shared_link=self._link),
            on_api_error=lambda e: self._listing_failed(e, folder),
        )
        while True:
            subfolders = []
            for entry in page.entries:
                # Files are read by their path, so it is kept whole: one too long to store
                # is refused instead of shortened.
                path = f"{folder}/{entry.name}" if folder else entry.name
                problem = too_long(path, "path in Dropbox", MAX_SOURCE_PATH_CHARS)
                if isinstance(entry, FileMetadata) and problem:
                    yield refused_file(entry.id, entry.name, path, problem)
                elif isinstance(entry, FileMetadata):
                    yield _remote_file(entry, path)
                elif isinstance(entry, FolderMetadata):
                    if problem:
                        yield refused_folder(entry.id, entry.name, path, problem)
                    else:
                        budget.folder()
                        subfolders.append(path)
            # Reversed so the stack pops them in listing order: a plain depth-first walk.
            pending.extend(reversed(subfolders))
            if not page.has_more:
                return
            budget.page(folder, page.cursor, shown)
            page = self._call(
                partial(self._client.files_list_folder_continue, page.cursor),
                on_api_error=lambda e: self._listing_failed(e, folder),
            )

    @contextmanager
    def open(self, file: RemoteFile) -> Iterator[Iterator[bytes]]:
        link_path = file.extra.get("link_path") or f"/{file.path}"
        _, response = self._call(
            lambda: self._client.sharing_get_shared_link_file(url=self.ref.url, path=link_path),
            on_api_error=lambda e: _download_failed(e, file),
        )
        try:
            with watching(response):
                yield _chunks(response, file)
        finally:
            response.close()

    def checksum_now(self, file: RemoteFile) -> str | None:
        # Dropbox gives a content_hash only in folder listings (the shared link's metadata of
        # a file has none), so the folder that holds the file is listed again until it shows.
        folder, _, name = (file.extra.get("link_path") or f"/{file.path}").rpartition("/")

        def gone(error: dbx_errors.ApiError) -> NoReturn:
            raise ItemError(f"{file.path} is no longer listed.") from error

        try:
            page: ListFolderResult = self._call(
                lambda: self._client.files_list_folder(path=folder, shared_link=self._link), gone
            )
            while True:
                for entry in page.entries:
                    # Matched like Dropbox matches the path the download asks for.
                    if isinstance(entry, FileMetadata) and entry.name.lower() == name.lower():
                        return _remote_file(entry, file.path).checksum
                if not page.has_more:
                    return None
                page = self._call(
                    partial(self._client.files_list_folder_continue, page.cursor), gone
                )
        except ImageImportError:
            return None  # unknown: the download counts as damaged, and is tried again later

    def close(self) -> None:
        self._client.close()

    def _call(self, call: Callable[[], T], on_api_error: Callable[[Any], NoReturn]) -> T:
        def attempt() -> T:
            try:
                return call()
            except dbx_errors.ApiError as error:
                on_api_error(error)
            except Exception as error:
                _raise_translated(error)

        return with_retries(self.settings, attempt)

    def _listing_failed(self, error: dbx_errors.ApiError, folder: str) -> NoReturn:
        if folder:
            raise _SubfolderGone() from error
        reason = _error_tags(error)
        if "shared_link_access_denied" in reason or "restricted_content" in reason:
            raise SourceUnavailable(
                "This Dropbox folder is not public: the link is restricted, password-protected "
                "or only shared with specific people."
            ) from error
        if "not_folder" in reason:
            raise SourceUnavailable("This Dropbox link points to a file, not a folder.") from error
        raise SourceUnavailable(
            "Dropbox could not find this shared folder: the link was removed, has expired, "
            "or is not shared publicly."
        ) from error


class _SubfolderGone(Exception):
    pass


def _remote_file(entry: FileMetadata, path: str) -> RemoteFile:
    return RemoteFile(
        id=entry.id,
        name=entry.name,
        path=path,
        size=entry.size,
        checksum=f"dropbox:{entry.content_hash}" if entry.content_hash else None,
        extra={"link_path": f"/{path}"},
    )


def _chunks(response: requests.Response, file: RemoteFile) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK_SIZE)
    except _TRANSIENT_REQUESTS_ERRORS as error:
        raise TransientError(f"{file.path}: the Dropbox download broke off mid-file.") from error


def _download_failed(error: dbx_errors.ApiError, file: RemoteFile) -> NoReturn:
    reason = _error_tags(error)
    if "shared_link_access_denied" in reason:
        raise ItemError(f"{file.path} is no longer accessible through the shared link.") from error
    if "shared_link_is_directory" in reason:
        raise ItemError(f"{file.path} is now a folder, not a file.") from error
    raise ItemError(f"{file.path} was deleted or is no longer shared.") from error


def _raise_translated(error: Exception) -> NoReturn:
    """Map SDK and transport errors onto ours; anything unexpected is re-raised as is."""
    if isinstance(error, dbx_errors.HttpError):  # an error status, as the SDK read it
        raise answer_error(
            error.status_code,
            retry_after=error.backoff if isinstance(error, dbx_errors.RateLimitError) else None,
            missing_scope=isinstance(error, dbx_errors.AuthError)
            and error.error is not None
            and error.error.is_missing_scope(),
        ) from error
    if isinstance(error, requests.TooManyRedirects):
        raise UnusableAnswer(
            f"Dropbox redirected more than {MAX_REDIRECTS} times in a row (a redirect loop); "
            "gave up."
        ) from None
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        raise UnusableAnswer(
            "Dropbox redirected to an invalid address, or to one that is neither http nor https."
        ) from None
    if isinstance(error, _TRANSIENT_REQUESTS_ERRORS):
        raise TransientError(
            f"Connection problem talking to Dropbox ({type(error).__name__}); will retry."
        ) from error
    raise error


def _error_tags(error: dbx_errors.ApiError) -> str:
    """The error's union tags joined like Dropbox's error_summary, e.g. "path/not_found"."""
    tags = []
    value: Any = error.error
    while value is not None and hasattr(value, "_tag"):
        tags.append(str(value._tag))
        value = getattr(value, "_value", None)
    return "/".join(tags)
