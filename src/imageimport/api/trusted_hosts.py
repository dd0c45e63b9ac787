"""Answer only requests addressed to a host name in ALLOWED_HOSTS.

DNS rebinding: a page on attacker.example points its own name at 127.0.0.1 (or at a LAN
address) once loaded; the browser then lets that page talk to this server as if it were its
own origin, sending `Host: attacker.example`. Refusing unknown Host headers stops it.

Starlette's TrustedHostMiddleware does the same check, but answers in plain text (every error
here is an RFC 9457 problem), may redirect to a www. name, and cannot leave the probes open:
kubelet and load balancer health checks address pods by IP, which no list can know."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from imageimport.api.problems import Problem, problem_response

# name | [IPv6], then an optional :port (RFC 9110's Host: uri-host [ ":" port ]).
_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[^\[\]:/@\s\\]+))(?::\d{1,5})?")
_SHOWN_CHARACTERS = 100


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, allowed: Iterable[str], open_paths: Iterable[str]) -> None:
        """`allowed` as Settings.allowed_hosts normalises them; `open_paths` answer any host."""
        self.app = app
        patterns = list(allowed)
        self.any_host = "*" in patterns
        self.exact = {p for p in patterns if not p.startswith("*")}
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any_host or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"host"]
        host = request_host(values[0]) if len(values) == 1 else None
        if host is not None and self.allows(host):
            await self.app(scope, receive, send)
            return
        await problem_response(scope["path"], _refusal(values))(scope, receive, send)

    def allows(self, host: str) -> bool:
        return host in self.exact or host.endswith(self.suffixes)


def request_host(header: bytes) -> str | None:
    """The host name of a Host header, normalised as ALLOWED_HOSTS entries are; None when
    the header is not a valid Host."""
    match = _HOST_HEADER.fullmatch(header.decode("latin-1").lower())
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            return ipaddress.IPv6Address(match["ipv6"]).compressed
        except ValueError:
            return None
    return str(match["name"]).removesuffix(".")


def _refusal(values: list[bytes]) -> Problem:
    if not values:
        what = "The request has no Host header"
    elif len(values) > 1:
        what = "The request has more than one Host header"
    else:
        shown = values[0].decode("latin-1")[:_SHOWN_CHARACTERS]
        shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in shown)
        what = f"This server does not answer to the host {shown!r}"
    return Problem(
        400,
        "untrusted-host",
        f"{what}. If this is a name clients use to reach it, add it to ALLOWED_HOSTS.",
        title="Unknown host",
    )
