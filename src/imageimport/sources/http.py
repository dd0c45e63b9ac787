"""The HTTP plumbing every source shares: one pooled client that only talks to the
configured source hosts and decodes bodies with bounded memory, httpx's errors in our words,
retries that honour Retry-After, and streaming a download whose start is retried.

What an error status means is each provider's to say (its `common.py`); here are only the
facts every provider's classifier uses: which statuses are worth a retry, and Retry-After."""

from __future__ import annotations

import email.utils
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import tenacity

from imageimport.errors import ForbiddenHost, ImageImportError, TransientError, UnusableAnswer
from imageimport.settings import Settings
from imageimport.sources.budget import RequestBudget
from imageimport.sources.transfer import watching

T = TypeVar("T")

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 10
# The codings a body may come in, at most one layer of them (see _take_over_body).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = "gzip, deflate"
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


def make_http_client(settings: Settings, budget: RequestBudget, **kwargs: object) -> httpx.Client:
    """The client of one source: every request it sends, redirects included, goes to a
    configured source host and waits for its slot in `budget` first."""
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
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        # Hooks, not a transport: they see every response, whichever transport (a proxy's
        # included) carried it, before httpx reads a byte of its body.
        # The guard first: a request that is refused costs no slot.
        event_hooks={"request": [guard, _taking(budget)], "response": [_take_over_body]},
        headers={"User-Agent": "imageimport/0.1", "Accept-Encoding": ACCEPT_ENCODING},
        **kwargs,  # type: ignore[arg-type]
    )


def _taking(budget: RequestBudget) -> Callable[[httpx.Request], None]:
    def take(_request: httpx.Request) -> None:
        budget.take()

    return take


def _take_over_body(response: httpx.Response) -> None:
    """Decode bodies ourselves, with memory bounded whatever the server sends.

    httpx decodes every layer of Content-Encoding, each layer's whole output per network read:
    an answer of 2 KB marked `gzip, gzip` becomes gigabytes before any size check sees a byte.
    Here at most one layer of gzip or deflate is accepted and inflated at most CHUNK_SIZE bytes
    at a time, so the callers' byte limits (MAX_FILE_SIZE_BYTES, the page caps) count decoded
    bytes that never exist in memory more than a chunk at a time. More layers, or codings
    other than those, are refused when the body is read (the status still speaks first).
    A redirect's body is never read at all: only its Location is needed."""
    raw = response.stream
    assert isinstance(raw, httpx.SyncByteStream)  # the hooks of an httpx.Client, not async
    if response.has_redirect_location:
        # An invalid address surfaces as InvalidURL (see source_errors), not as the
        # RemoteProtocolError httpx would raise for it, which reads like a network hiccup.
        httpx.URL(response.headers["location"])
        response.stream = _UnreadBody(raw)
    codings = [
        coding.strip().lower()
        for coding in response.headers.get_list("content-encoding", split_commas=True)
        if coding.strip().lower() not in ("", "identity")
    ]
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]  # httpx must not decode it again
    if codings and not response.has_redirect_location:
        response.headers.pop("content-length", None)  # the encoded length, not the body's
        response.stream = _DecodedBody(raw, codings)


class _UnreadBody(httpx.SyncByteStream):
    def __init__(self, raw: httpx.SyncByteStream) -> None:
        self._raw = raw

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        self._raw.close()


class _DecodedBody(httpx.SyncByteStream):
    """One layer of gzip or deflate, inflated incrementally: at most CHUNK_SIZE bytes come out
    per step, and the compressed input may not outgrow the output by much (so a stream that
    inflates to nothing cannot be fed forever under the decoded-byte limits either)."""

    def __init__(self, raw: httpx.SyncByteStream, codings: list[str]) -> None:
        self._raw = raw
        self._codings = codings

    def __iter__(self) -> Iterator[bytes]:
        shown = ", ".join(self._codings)[:100]
        if len(self._codings) > 1:
            raise httpx.DecodingError(
                f"the answer is compressed in {len(self._codings)} layers (Content-Encoding: "
                f"{shown}); at most one is accepted, so it was refused"
            )
        wbits = _WBITS.get(self._codings[0])
        if wbits is None:
            raise httpx.DecodingError(
                f"the answer is encoded as {shown!r}, which is not accepted (only gzip or "
                "deflate), so it was refused"
            )
        inflater = _Inflater(wbits)
        for data in self._raw:
            yield from inflater.feed(data)
        inflater.finish()

    def close(self) -> None:
        self._raw.close()


class _Inflater:
    _SLACK = 1024 * 1024  # headers, trailers and stored blocks of an honest stream fit

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._zlib = zlib.decompressobj(wbits)
        self._fresh = True  # nothing inflated yet: "deflate" may still turn out raw
        self._consumed = 0
        self._produced = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._consumed += len(data)
        while True:
            if self._zlib.eof and data:
                # Another gzip member may follow (RFC 1952); after deflate, nothing may.
                if self._wbits != _WBITS["gzip"]:
                    raise httpx.DecodingError(_GARBLED + " (data follows its end)")
                self._zlib = zlib.decompressobj(self._wbits)
            try:
                out = self._zlib.decompress(data, CHUNK_SIZE)
            except zlib.error:
                if not (self._fresh and self._wbits == zlib.MAX_WBITS):
                    raise httpx.DecodingError(_GARBLED) from None
                # Some servers send raw deflate for "deflate"; httpx allows it too.
                self._wbits = -zlib.MAX_WBITS
                self._zlib = zlib.decompressobj(self._wbits)
                continue
            self._fresh = False
            self._produced += len(out)
            if out:
                yield out
            data = self._zlib.unconsumed_tail or self._zlib.unused_data
            # A full chunk may leave output inside zlib although all input went in.
            if not data and len(out) < CHUNK_SIZE:
                break
        if self._consumed > 2 * self._produced + self._SLACK:
            raise httpx.DecodingError(_GARBLED + " (it inflates to far less than it takes)")

    def finish(self) -> None:
        if self._consumed and not self._zlib.eof:
            raise httpx.DecodingError(_GARBLED + " (it stops before its end)")


_GARBLED = "the answer's compressed body is garbled"


@contextmanager
def source_errors(what: str, reading: bool = False) -> Iterator[None]:
    """httpx's errors in our words, like httpx's own map_httpcore_exceptions does for
    httpcore's: every request and body read of a source passes through here (`reading` for
    the latter). What no retry can fix fails the file (or the listing) at once with a
    sentence; what a retry can fix is TransientError, bounded by the retries. Nothing is left
    to look "unexpected"."""
    try:
        yield
    except httpx.TooManyRedirects:
        raise UnusableAnswer(
            f"{what}: the server redirected more than {MAX_REDIRECTS} times in a row (a "
            "redirect loop); gave up."
        ) from None
    except httpx.InvalidURL as error:
        raise UnusableAnswer(
            f"{what}: the server redirected to an invalid address ({str(error)[:200]})."
        ) from None
    except httpx.UnsupportedProtocol:
        raise UnusableAnswer(
            f"{what}: the server redirected to an address that is neither http nor https."
        ) from None
    except httpx.DecodingError as error:
        raise UnusableAnswer(f"{what}: {error}.") from None
    except httpx.TransportError as error:
        problem = "the connection dropped mid-answer" if reading else "connection problem"
        raise TransientError(f"{what}: {problem} ({type(error).__name__}).") from None


def parse_retry_after(value: str | float | None) -> float | None:
    """Seconds to wait, from a Retry-After header (seconds or an HTTP date), or from a number
    of seconds a library read off the answer already. None when there is no hint, or none
    that can be read: then the usual backoff applies."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return max(0.0, value)
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


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


def retrying(settings: Settings) -> tenacity.Retrying:
    """Retry transient failures with exponential backoff, honouring Retry-After."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        wait=_wait(settings),
        stop=tenacity.stop_after_attempt(settings.source_retry_attempts),
        reraise=True,
    )


class GiveUpNow(Exception):
    """Wraps an error that must skip the in-call retries (e.g. a download quota that only
    resets in hours): `with_retries` raises the error itself at once, and the pipeline
    retries the item later instead."""

    def __init__(self, error: ImageImportError) -> None:
        super().__init__(str(error))
        self.error = error


def with_retries(settings: Settings, call: Callable[[], T]) -> T:
    try:
        for attempt in retrying(settings):
            with attempt:
                return call()
    except GiveUpNow as give_up:
        raise give_up.error from None
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def open_stream(
    client: httpx.Client, method: str, url: str, what: str, **kwargs: object
) -> Iterator[httpx.Response]:
    """A request whose body is streamed, httpx's errors translated. Any status comes back:
    what an error status means is for the provider's classifier to say."""
    with source_errors(what), client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        yield response


def iter_body(response: httpx.Response, what: str) -> Iterable[bytes]:
    with source_errors(what, reading=True):
        yield from response.iter_bytes(CHUNK_SIZE)


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
    """Establish a download with retries, then hand out its body chunk by chunk. `start`
    opens the response (`open_stream`, entered into the stack it is given) and raises the
    error an error answer means.

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

    stack, response = with_retries(settings, attempt)
    with stack, watching(response):
        yield iter(iter_body(response, what))
