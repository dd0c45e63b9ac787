"""Run a fake service on a free loopback port, with injectable faults."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class Fault:
    """Answer the first `times` matching requests (per distinct path) with a fault.

    kind: "429" (with Retry-After), "500", "drop" (close the connection mid-body),
    or "slow" (wait `delay` seconds, then answer normally).
    """

    kind: str
    path: str = ".*"  # regex matched against the request path
    times: int = 1
    retry_after: float = 0.2
    delay: float = 1.0
    methods: tuple[str, ...] = ("GET", "POST")


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    # Fixed latency added to every request, like a real cloud API's round trip.
    latency: float = 0.0
    seen: Counter[tuple[int, str]] = field(default_factory=Counter)
    # When each request arrived (time.monotonic()), in order: how fast clients ask.
    arrivals: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def busiest_second(self) -> int:
        """The most requests that arrived within any one second [t, t + 1)."""
        with self.lock:
            return busiest_second(self.arrivals)

    def add(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()

    def pick(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if method in fault.methods and re.fullmatch(fault.path, path):
                    key = (index, path)
                    if self.seen[key] < fault.times:
                        self.seen[key] += 1
                        return fault
        return None


def busiest_second(times: list[float]) -> int:
    """The most of `times` (seconds) that fall within any one second [t, t + 1)."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


class FaultMiddleware:
    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.plan.lock:
            self.plan.arrivals.append(time.monotonic())
        if self.plan.latency:
            await asyncio.sleep(self.plan.latency)
        fault = self.plan.pick(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
        elif fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
        elif fault.kind in ("429", "500"):
            status = int(fault.kind)
            headers = [(b"content-type", b"application/json")]
            if status == 429:
                headers.append((b"retry-after", str(fault.retry_after).encode()))
            body = b'{"error": {"code": %d, "message": "injected fault"}}' % status
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif fault.kind == "drop":
            # Promise a body, send part of it, then fail: the client sees a broken connection.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"100000")],
                }
            )
            await send({"type": "http.response.body", "body": b"\0" * 10, "more_body": True})
            raise ConnectionResetError("injected dropped connection")
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """A uvicorn server in a background thread; `url` is its base URL."""

    def __init__(self, app: ASGIApp, faults: FaultPlan | None = None) -> None:
        self.faults = faults or FaultPlan()
        self.app = FaultMiddleware(app, self.faults)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, timeout_keep_alive=30, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
