"""What the two Drive routes (`api`, `public`) share: Drive's types, and establishing a
download with retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Final

import httpx

from imageimport.errors import ImageImportError
from imageimport.settings import Settings
from imageimport.sources.http import iter_body, source_errors, with_retries
from imageimport.sources.transfer import watching

PROVIDER = "gdrive"
FOLDER_MIME: Final = "application/vnd.google-apps.folder"
SHORTCUT_MIME: Final = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX: Final = "application/vnd.google-apps."


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
