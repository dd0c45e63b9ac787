"""The HTTP plumbing every source shares: one pooled client that only talks to the
configured source hosts, status-code mapping, and retries that honour Retry-After."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import tenacity

from imageimport.errors import ForbiddenHost, SourceUnavailable, TransientError
from imageimport.settings import Settings

T = TypeVar("T")

CHUNK_SIZE = 256 * 1024
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Real services hand file bytes out from CDN hosts of their own; only these are
# followed, and only when the matching endpoint is the real one.
_CDN_SUFFIXES = {
    "drive.usercontent.google.com": (".googleusercontent.com",),
    "www.dropbox.com": (".dropboxusercontent.com",),
}


def allowed_hosts(settings: Settings) -> tuple[set[str], tuple[str, ...]]:
    """Exact origins (`scheme://host[:port]`) and https host suffixes a source may contact.
    Origins, not hosts: a redirect from https to plain http on the same host is refused too."""
    exact: set[str] = set()
    suffixes: list[str] = []
    for endpoint in settings.source_endpoints:
        parts = urlsplit(endpoint)
        netloc = parts.netloc.lower()
        exact.add(f"{parts.scheme.lower()}://{netloc}")
        suffixes.extend(_CDN_SUFFIXES.get(netloc, ()))
    return exact, tuple(suffixes)


def make_http_client(settings: Settings, **kwargs: object) -> httpx.Client:
    exact, suffixes = allowed_hosts(settings)

    def guard(request: httpx.Request) -> None:
        url = request.url
        origin = f"{url.scheme}://{url.netloc.decode('ascii').lower()}"
        host = url.host.lower()
        secure_cdn = url.scheme == "https" and host.endswith(suffixes)
        if origin not in exact and not secure_cdn:
            raise ForbiddenHost(host)

    return httpx.Client(
        timeout=httpx.Timeout(settings.http_timeout_seconds, connect=15.0),
        follow_redirects=True,
        max_redirects=10,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        event_hooks={"request": [guard]},
        headers={"User-Agent": "imageimport/0.1"},
        **kwargs,  # type: ignore[arg-type]
    )


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def check_response(response: httpx.Response, what: str) -> None:
    """Raise the error a status code means; `what` names the thing for the message."""
    status = response.status_code
    if status < 400:
        return
    if status in TRANSIENT_STATUS:
        raise TransientError(
            f"{what}: the server answered {status}; will retry.",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status in (401, 403, 404, 410):
        raise SourceUnavailable(f"{what}: not found or not shared publicly (HTTP {status}).")
    raise SourceUnavailable(f"{what}: the server refused the request (HTTP {status}).")


def _wait(settings: Settings) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential_jitter(
        multiplier=0.5, max=settings.source_retry_max_wait_seconds, jitter=0.5
    )

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hinted = getattr(error, "retry_after", None)
        if hinted is not None:
            return min(hinted, settings.source_retry_max_wait_seconds)
        return backoff(state)

    return wait


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientError | httpx.TransportError)


def retrying(settings: Settings) -> tenacity.Retrying:
    """Retry transient failures with exponential backoff, honouring Retry-After."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=_wait(settings),
        stop=tenacity.stop_after_attempt(settings.source_retry_attempts),
        reraise=True,
    )


def with_retries(settings: Settings, call: Callable[[], T]) -> T:
    for attempt in retrying(settings):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def stream_get(
    client: httpx.Client, url: str, what: str, **kwargs: object
) -> Iterator[httpx.Response]:
    """GET with a streamed body; status checked, transport errors made transient."""
    try:
        with client.stream("GET", url, **kwargs) as response:  # type: ignore[arg-type]
            check_response(response, what)
            yield response
    except httpx.TransportError as error:
        raise TransientError(f"{what}: connection problem ({type(error).__name__}).") from error


def iter_body(response: httpx.Response, what: str) -> Iterable[bytes]:
    try:
        yield from response.iter_bytes(CHUNK_SIZE)
    except httpx.TransportError as error:
        raise TransientError(f"{what}: connection dropped mid-file.") from error
