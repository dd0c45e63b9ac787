"""Google Drive through the Drive API v3 with an API key (public folders only).

Listing uses google-api-python-client (files.get on the root, then files.list per folder,
1000 items a page, breadth first, each page handed out before the next is fetched).
googleapiclient sits on httplib2, which is not thread safe, so the service is built per
`list()` call and only used by the thread iterating it. Downloads do not go through
googleapiclient (httplib2 buffers whole bodies); they stream with the shared httpx client.
Every request, listing or download, sends the key in the X-Goog-Api-Key header, so it never
appears in a URL that could be logged.

Error messages never contain the key: HttpError's own text includes the request URL (and
with it the key), so errors are rebuilt from the status and Google's JSON body, `from None`.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httplib2
import httpx
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from imageimport.errors import (
    ConfigError,
    ForbiddenHost,
    ImageImportError,
    SourceUnavailable,
    TransientError,
    UnusableAnswer,
)
from imageimport.settings import Settings, secret
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.budget import RequestBudget, SlotBook
from imageimport.sources.checksums import MD5
from imageimport.sources.gdrive.common import (
    ABUSIVE_REASON,
    FOLDER_MIME,
    PROVIDER,
    SHORTCUT_MIME,
    DriveAnswer,
    classify,
    drive_budget,
    file_unavailable,
    folder_unavailable,
    is_google_apps_type,
)
from imageimport.sources.http import (
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

LIST_FIELDS = (
    "nextPageToken, files(id, name, mimeType, size, md5Checksum, resourceKey, "
    "imageMediaMetadata(width, height, time, cameraMake, cameraModel), "
    "shortcutDetails(targetId, targetMimeType, targetResourceKey))"
)
ROOT_FIELDS = "id, name, mimeType, resourceKey, shortcutDetails(targetId, targetMimeType)"
PAGE_SIZE = 1000


class _Refused(Exception):
    """An error answer of the API that no retry gets past, before it is given words for what
    was asked (`folder_unavailable`, `file_unavailable`)."""

    def __init__(self, answer: DriveAnswer) -> None:
        super().__init__(f"HTTP {answer.status} {answer.reason}: {answer.message}")
        self.answer = answer


class _EncodedAnswer(Exception):
    """An answer compressed although it was asked for uncompressed (see _IdentityHttp)."""


class _RefuseEncoded:
    """Mixed into httplib2's connections: an answer is judged on its headers, before httplib2
    reads its body whole and inflates it whole."""

    def getresponse(self) -> http.client.HTTPResponse:
        response: http.client.HTTPResponse = super().getresponse()  # type: ignore[misc]
        coding = (response.getheader("content-encoding") or "").strip().lower()
        if coding not in ("", "identity"):
            self.close()  # type: ignore[attr-defined]
            raise _EncodedAnswer(
                f"the answer is compressed (Content-Encoding: {coding[:100]}) although it was "
                "asked for uncompressed, so it was refused"
            )
        return response


class _IdentityHttpConnection(_RefuseEncoded, httplib2.HTTPConnectionWithTimeout):
    pass


class _IdentityHttpsConnection(_RefuseEncoded, httplib2.HTTPSConnectionWithTimeout):
    pass


class _IdentityHttp(httplib2.Http):
    """The listing's HTTP. httplib2 inflates a gzip answer whole, up to 100 times its size past
    10 MiB (its LimitDecoder), so a few MB of listing could take gigabytes: here it asks for
    uncompressed answers, and refuses one compressed anyway before reading its body. Every
    request waits for its slot in the key's request budget first."""

    _CONNECTIONS: ClassVar[dict[str, type]] = {
        "http": _IdentityHttpConnection,
        "https": _IdentityHttpsConnection,
    }

    def __init__(self, budget: RequestBudget, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._budget = budget

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int = httplib2.DEFAULT_MAX_REDIRECTS,
        connection_type: type | None = None,
    ) -> tuple[httplib2.Response, bytes]:
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "accept-encoding"}
        headers["accept-encoding"] = "identity"
        connection_type = connection_type or self._CONNECTIONS.get(urlsplit(uri).scheme.lower())
        self._budget.take()
        return super().request(uri, method, body, headers, redirections, connection_type)


class DriveApiSource(Source):
    provider: ClassVar[str] = PROVIDER
    checksums: ClassVar[Mapping[str, str]] = {MD5: "Google Drive"}  # md5Checksum

    def __init__(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> None:
        super().__init__(ref, settings, slots)
        key = secret(settings.google_api_key)
        if not key:
            raise ConfigError("The Drive API route needs GOOGLE_API_KEY to be set.")
        self._key = key
        self._api = settings.gdrive_api_url
        # Listing (httplib2) and downloads (httpx) spend the key's one budget.
        self._budget = drive_budget(settings, self.slots, key)
        self._http = make_http_client(settings, self._budget)

    def close(self) -> None:
        self._http.close()

    # -- listing -----------------------------------------------------------------------------

    def list(self) -> Iterator[RemoteFile]:
        budget = ListingBudget(self.settings, "Google Drive")
        service = self._service()
        root_id, root_key = self._root_folder(service)
        budget.folder()
        queue: deque[tuple[str, str, str | None]] = deque([(root_id, "", root_key)])
        visited = SeenIds(root_id)  # shortcuts can make folder loops
        emitted = SeenIds()  # a shortcut's target may also be listed where it lives
        while queue:
            folder_id, prefix, resource_key = queue.popleft()
            for item in self._folder_items(service, budget, folder_id, resource_key, prefix):
                mime = item.get("mimeType")
                file_id = str(item.get("id") or "")
                name = str(item.get("name") or file_id)
                path = join_path(prefix, name)
                extra: dict[str, Any] = {}
                is_shortcut = mime == SHORTCUT_MIME
                if is_shortcut:
                    # Followed to its target, under the shortcut's own name; the target's size
                    # and checksum are not in the listing.
                    details = item.get("shortcutDetails") or {}
                    file_id = str(details.get("targetId") or "")
                    mime = details.get("targetMimeType")
                    extra["shortcut_id"] = item.get("id")
                    resource_key_of_item = details.get("targetResourceKey")
                else:
                    resource_key_of_item = item.get("resourceKey")
                if not file_id:
                    continue
                problem = too_long(file_id, "Google Drive id") or too_long(
                    resource_key_of_item, "resource key"
                )
                if mime == FOLDER_MIME:
                    if problem:
                        yield refused_folder(file_id, name, path, problem)
                    elif visited.add(file_id):
                        budget.folder()
                        queue.append((file_id, path, resource_key_of_item))
                    continue
                if is_google_apps_type(mime):
                    continue  # Docs, Sheets...: no bytes to import
                if problem:
                    yield refused_file(file_id, name, path, problem)
                    continue
                if not emitted.add(file_id):
                    continue
                if resource_key_of_item:
                    extra["resource_key"] = resource_key_of_item
                if item.get("imageMediaMetadata"):
                    extra["image_metadata"] = item["imageMediaMetadata"]
                size, md5 = item.get("size"), item.get("md5Checksum")
                yield RemoteFile(
                    id=file_id,
                    name=name,
                    path=path,
                    size=int(size) if size is not None and not is_shortcut else None,
                    mime_type=mime,
                    checksum=f"md5:{md5}" if md5 and not is_shortcut else None,
                    extra=extra,
                )

    def _service(self) -> Any:
        http = _IdentityHttp(self._budget, self.settings.http_timeout_seconds)
        # httplib2 would follow a redirect to any host; the Drive API never redirects, so a
        # redirect is refused instead (see _execute).
        http.follow_redirects = False
        return build(
            "drive",
            "v3",
            # No developerKey: it would put the key in every URL, and googleapiclient logs
            # URLs. The key goes in a header instead (see _request).
            http=http,
            static_discovery=True,
            cache_discovery=False,
            # The static discovery document's base is https://www.googleapis.com/drive/v3/;
            # an api_endpoint replaces all of it, so the service path is repeated here.
            client_options={"api_endpoint": f"{self._api}/drive/v3/"},
        )

    def _root_folder(self, service: Any) -> tuple[str, str | None]:
        """The folder to list (a shortcut to a folder is followed), checked to exist.

        Needed because files.list on a folder the key cannot see answers "no files" rather
        than an error; files.get tells a missing or private folder apart from an empty one.
        """
        ref = self.ref
        what = f"Reading the Google Drive folder {ref.url}"
        request = self._request(
            lambda: service.files().get(
                fileId=ref.folder_id, fields=ROOT_FIELDS, supportsAllDrives=True
            ),
            ref.folder_id,
            ref.resource_key,
        )
        try:
            meta = with_retries(self.settings, lambda: self._execute(request, what))
        except _Refused as refused:
            raise folder_unavailable(refused.answer, ref.url) from None
        mime = meta.get("mimeType")
        if mime == SHORTCUT_MIME:
            details = meta.get("shortcutDetails") or {}
            if details.get("targetMimeType") == FOLDER_MIME and details.get("targetId"):
                return str(details["targetId"]), details.get("targetResourceKey")
        if mime != FOLDER_MIME:
            raise SourceUnavailable(
                f"The Google Drive link {ref.url} points at a file ({meta.get('name')!r}), not "
                "a folder; share the folder that holds the images instead."
            )
        return ref.folder_id, ref.resource_key

    def _folder_items(
        self,
        service: Any,
        budget: ListingBudget,
        folder_id: str,
        resource_key: str | None,
        prefix: str,
    ) -> Iterator[dict[str, Any]]:
        """Every child of one folder, page by page; a vanished subfolder is skipped."""
        shown = repr(prefix or self.ref.url)
        what = f"Listing the Google Drive folder {shown}"
        token: str | None = None
        while True:
            budget.page(folder_id, token, shown)
            request = self._list_request(service, folder_id, resource_key, token)
            try:
                page = with_retries(self.settings, lambda: self._execute(request, what))  # noqa: B023
            except _Refused as refused:
                if prefix == "" or refused.answer.key_problem:
                    raise folder_unavailable(refused.answer, self.ref.url) from None
                log.warning(
                    "Skipping Google Drive subfolder %r: %s", prefix, refused.answer.message
                )
                return
            yield from page.get("files") or []
            token = page.get("nextPageToken")
            if not token:
                return

    def _list_request(
        self, service: Any, folder_id: str, resource_key: str | None, token: str | None
    ) -> Callable[[], Any]:
        return self._request(
            lambda: service.files().list(
                q=f"'{folder_id}' in parents and trashed=false",
                pageSize=PAGE_SIZE,
                pageToken=token,
                supportsAllDrives=True,
                includeItemsFromAllDrives=True,
                fields=LIST_FIELDS,
            ),
            folder_id,
            resource_key,
        )

    def _request(
        self, make: Callable[[], Any], item_id: str, resource_key: str | None
    ) -> Callable[[], Any]:
        """A fresh HttpRequest per attempt, carrying the item's resource key when it has one."""

        def fresh() -> Any:
            request = make()
            request.headers["X-Goog-Api-Key"] = self._key
            if resource_key:
                request.headers["X-Goog-Drive-Resource-Keys"] = f"{item_id}/{resource_key}"
            return request

        return fresh

    def _execute(self, request: Callable[[], Any], what: str) -> dict[str, Any]:
        outcome: Exception
        try:
            return dict(request().execute(num_retries=0))
        except HttpError as error:
            if 300 <= error.resp.status < 400:
                location = urlsplit(error.resp.get("location", ""))
                raise ForbiddenHost(location.hostname or "an unnamed host") from None
            answer = DriveAnswer.from_api(
                error.resp.status, error.content or b"", error.resp.get("retry-after"), self._key
            )
            outcome = classify(answer, what) or _Refused(answer)
        except _EncodedAnswer as error:
            outcome = UnusableAnswer(f"{what}: {error}.")
        except (OSError, http.client.HTTPException, httplib2.HttpLib2Error) as error:
            outcome = TransientError(f"{what}: connection problem ({type(error).__name__}).")
        except ValueError:  # a body cut short or garbled on the way is not valid JSON
            outcome = TransientError(f"{what}: Google Drive's answer could not be read.")
        # Raised outside the except blocks: HttpError's text holds the URL with the key.
        raise outcome

    # -- downloading -------------------------------------------------------------------------

    def _file_request(self, file: RemoteFile) -> tuple[str, dict[str, str]]:
        """The URL and headers of files.get for `file`."""
        headers = {"X-Goog-Api-Key": self._key}
        resource_key = file.extra.get("resource_key")
        if resource_key:
            headers["X-Goog-Drive-Resource-Keys"] = f"{file.id}/{resource_key}"
        return f"{self._api}/drive/v3/files/{quote(file.id, safe='')}", headers

    def open(self, file: RemoteFile) -> AbstractContextManager[Iterator[bytes]]:
        what = f"Downloading {file.path!r} from Google Drive"
        url, headers = self._file_request(file)
        params = {"alt": "media", "supportsAllDrives": "true"}

        def ask(stack: ExitStack, query: dict[str, str]) -> httpx.Response | DriveAnswer:
            """The file's answer, entered into `stack`; or Drive's refusal, its answer closed."""
            with ExitStack() as asking:
                response = asking.enter_context(
                    open_stream(self._http, "GET", url, what, params=query, headers=headers)
                )
                if response.status_code < 400:
                    stack.enter_context(asking.pop_all())
                    return response
                return DriveAnswer.from_api(
                    response.status_code,
                    read_small(response, what, 64 * 1024),
                    response.headers.get("Retry-After"),
                    self._key,
                )

        def start(stack: ExitStack) -> httpx.Response:
            outcome = ask(stack, params)
            acknowledged = False
            if (
                isinstance(outcome, DriveAnswer)
                and outcome.reason == ABUSIVE_REASON
                and self.settings.drive_acknowledge_abuse
            ):
                # Only now: Drive refuses acknowledgeAbuse=true for a file it did not flag
                # (invalidAbuseAcknowledgment), so rclone too acknowledges the risk only once
                # a file was refused as abusive (rclone/rclone#2317).
                outcome = ask(stack, {**params, "acknowledgeAbuse": "true"})
                acknowledged = True
            if isinstance(outcome, httpx.Response):
                return outcome
            raise classify(outcome, what) or file_unavailable(outcome, file.path, acknowledged)

        return retried_download(self.settings, start, what)

    def checksum_now(self, file: RemoteFile) -> str | None:
        what = f"Reading the checksum of {file.path!r} from Google Drive"
        url, headers = self._file_request(file)
        params = {"fields": "md5Checksum", "supportsAllDrives": "true"}

        def fetch() -> str | None:
            with open_stream(self._http, "GET", url, what, params=params, headers=headers) as got:
                body = read_small(got, what, 64 * 1024)
                if got.status_code >= 400:
                    answer = DriveAnswer.from_api(
                        got.status_code, body, got.headers.get("Retry-After"), self._key
                    )
                    retry = classify(answer, what)
                    if retry is not None:
                        raise retry
                    return None
            try:
                md5 = json.loads(body).get("md5Checksum")
            except (ValueError, AttributeError):
                return None
            return f"{MD5}:{md5}" if isinstance(md5, str) and md5 else None

        try:
            return with_retries(self.settings, fetch)
        except ImageImportError:
            return None  # unknown: the download counts as damaged, and is tried again later
