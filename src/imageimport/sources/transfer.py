"""A file's download as another thread sees it: how many bytes have arrived, and a way to cut
the connection.

The thread that downloads may sit in one blocking read for as long as the server keeps
sending a byte now and then (the read timeout is per read, and HTTP libraries hand out a chunk
only once it is full). So the deadline and the stop signal cannot wait for the next chunk:
`pipeline.download` watches each download from a thread of its own and, when it must end,
shuts the connection's socket down, which wakes the blocked read at once. Sources take part
by wrapping the body they stream in `watching(response)`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import httpx


class Transfer:
    """One download. `cut` may come from any thread; the first reason given stays."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: Callable[[], int] | None = None
        self._sever: Callable[[], None] | None = None
        self.reason: BaseException | None = None
        self.attached_at: float | None = None  # when the body started: a response is watched
        self._cut = threading.Event()

    def received(self) -> int:
        """Bytes of the body that reached this process, including any a library still
        buffers; 0 before a body is watched."""
        received = self._received
        try:
            return received() if received is not None else 0
        except Exception:
            return 0

    def cut(self, reason: BaseException) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self._cut.set()
            sever = self._sever
            # Under the lock: once `detach` has run, the connection may be back in the
            # client's pool serving another request, and must not be touched.
            if sever is not None:
                with contextlib.suppress(Exception):
                    sever()

    def wait_unless_cut(self, seconds: float) -> None:
        """Wait `seconds` before the download goes on; once it is cut, raise the reason."""
        if self._cut.wait(seconds):
            assert self.reason is not None
            raise self.reason

    def _attach(self, received: Callable[[], int], sever: Callable[[], None]) -> None:
        with self._lock:
            self._received, self._sever = received, sever
            cut_already = self.reason is not None
            self.attached_at = time.monotonic()
        if cut_already:
            with contextlib.suppress(Exception):
                sever()

    def _detach(self) -> None:
        with self._lock:
            self._sever = None
            # Keep the last count: the watcher may still look at it.
            last = self.received()
            self._received = lambda: last


_current: ContextVar[Transfer | None] = ContextVar("imageimport_transfer", default=None)


def current() -> Transfer | None:
    """The download this thread is working on, if any: a source that waits before its body
    starts looks at its `reason` to stop waiting when the download is stopped."""
    return _current.get()


@contextlib.contextmanager
def active(transfer: Transfer) -> Iterator[Transfer]:
    """Make `transfer` the one that sources on this thread report to."""
    token = _current.set(transfer)
    try:
        yield transfer
    finally:
        _current.reset(token)


@contextlib.contextmanager
def watching(response: Any) -> Iterator[None]:
    """Let the current download's watcher see and cut this streamed response (an httpx or a
    requests response) until the block ends. Does nothing when no download is watched."""
    transfer = _current.get()
    if transfer is None:
        yield
        return
    if isinstance(response, httpx.Response):
        transfer._attach(lambda: response.num_bytes_downloaded, _severer(response, _httpx_socket))
    else:
        transfer._attach(lambda: int(response.raw.tell()), _severer(response, _urllib3_socket))
    try:
        yield
    finally:
        transfer._detach()


def _severer(response: Any, find_socket: Callable[[Any], Any]) -> Callable[[], None]:
    def sever() -> None:
        sock = None
        with contextlib.suppress(Exception):
            sock = find_socket(response)
        if isinstance(sock, socket.socket):
            # shutdown, not close: it wakes a read blocked on the socket in another thread,
            # which then sees the connection end; the reading thread closes it as usual.
            # socket.socket's own method, so a TLS socket does not drop its TLS state
            # under the reader's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:
            response.close()

    return sever


def _httpx_socket(response: httpx.Response) -> Any:
    stream = response.extensions.get("network_stream")
    return stream.get_extra_info("socket") if stream is not None else None


def _urllib3_socket(response: Any) -> Any:
    connection = response.raw.connection
    return connection.sock if connection is not None else None
