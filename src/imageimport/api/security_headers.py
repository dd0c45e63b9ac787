"""Headers that keep browsers from misusing our answers: no framing by other sites
(clickjacking the page's Import and Delete buttons), no content sniffing, no referrer.

Every answer gets them. An answer that sets its own Content-Security-Policy (the page, image
bytes) keeps it, with `frame-ancestors 'none'` added as a second policy if it lacks one:
browsers enforce every policy they are sent."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_FRAMING = "frame-ancestors 'none'"
# JSON, problems, files: nothing in them may load or run anything.
DEFAULT_POLICY = f"default-src 'none'; {NO_FRAMING}"


def page_policy(store_origin: str | None) -> str:
    """The web page's policy: its own scripts and styles only (no inline code), images and
    fetches from this server and, with S3, from the store's origin, where the API redirects
    image requests to presigned URLs. blob: for the images fetched with a token."""
    store = f" {store_origin}" if store_origin else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' blob:{store}; connect-src 'self'{store}; "
        f"base-uri 'none'; form-action 'self'; {NO_FRAMING}"
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, framing_only_paths: Iterable[str] = ()) -> None:
        """`framing_only_paths` get only the framing policy: the interactive API docs load
        Swagger UI and ReDoc from a CDN with inline scripts."""
        self.app = app
        self.framing_only = frozenset(framing_only_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = NO_FRAMING if scope["path"] in self.framing_only else DEFAULT_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                own = headers.getlist("content-security-policy")
                if not own:
                    headers["Content-Security-Policy"] = policy
                elif not any("frame-ancestors" in value for value in own):
                    headers.append("Content-Security-Policy", NO_FRAMING)
            await send(message)

        await self.app(scope, receive, send_with_headers)
