"""Server-side request forgery: the only hosts ever contacted for a source are the configured
ones. Links that could point anywhere else are refused when they are parsed; a fake service
that redirects anywhere else (another port, localhost, IP literals in odd spellings, the
cloud metadata address) is refused with a clear error, and the decoy never sees a request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import PlainTextResponse

from imageimport.errors import ImageImportError, InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.budget import MemorySlotBook, RequestBudget
from imageimport.sources.http import make_http_client
from imageimport.sources.registry import open_source, parse_folder_url
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.fakes.server import RunningServer
from tests.security.conftest import (
    ROUTES,
    SettingsFactory,
    assert_contained,
    imported,
    items_by_path,
    serve_route,
)

DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
DRIVE = f"https://drive.google.com/drive/folders/{DRIVE_ID}"
DROPBOX = "https://www.dropbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6&dl=0"
UNLIMITED = RequestBudget.of(MemorySlotBook(), "gdrive", None, rate=0, burst=1)


# -- links refused at parse time -------------------------------------------------------------

REFUSED_LINKS = [
    # userinfo: the host is what comes after "@", whatever comes before it looks like
    f"https://drive.google.com@evil.example/drive/folders/{DRIVE_ID}",
    f"https://evil.example@drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://user:password@drive.google.com/drive/folders/{DRIVE_ID}",
    "https://www.dropbox.com@evil.example/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    "https://evil.example@www.dropbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    # backslashes: browsers read them as "/", Python's URL parser does not
    f"https://drive.google.com\\@evil.example/drive/folders/{DRIVE_ID}",
    f"https://evil.example\\@drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://drive.google.com\\drive\\folders\\{DRIVE_ID}",
    "https://www.dropbox.com\\scl\\fo\\abc123def456\\AAxyz987?rlkey=k3y4b5c6",
    # odd schemes
    f"ftp://drive.google.com/drive/folders/{DRIVE_ID}",
    f"file://drive.google.com/drive/folders/{DRIVE_ID}",
    "file:///etc/passwd",
    "javascript:alert(document.domain)//drive.google.com/drive/folders/x",
    f"gopher://drive.google.com/drive/folders/{DRIVE_ID}",
    "data:text/html,<script>alert(1)</script>",
    f"//drive.google.com/drive/folders/{DRIVE_ID}",
    # look-alike hosts: IDN homographs, punycode, suffix and prefix tricks
    f"https://dr\u0456ve.google.com/drive/folders/{DRIVE_ID}",  # Cyrillic i
    f"https://xn--drve-s1a.google.com/drive/folders/{DRIVE_ID}",
    f"https://\uff44\uff52\uff49\uff56\uff45.google.com/drive/folders/{DRIVE_ID}",  # fullwidth
    "https://www.dr\u03bfpbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",  # Greek o
    "https://www.xn--drpbox-4ve.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    f"https://drive.google.com.evil.example/drive/folders/{DRIVE_ID}",
    f"https://evildrive.google.com.example/drive/folders/{DRIVE_ID}",
    "https://www.dropbox.com.evil.example/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    "https://dropbox.co/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    # IP literals, localhost, link-local and metadata addresses
    f"http://169.254.169.254/drive/folders/{DRIVE_ID}",
    "http://169.254.169.254/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
    f"http://127.0.0.1/drive/folders/{DRIVE_ID}",
    f"http://localhost/drive/folders/{DRIVE_ID}",
    f"http://[::1]/drive/folders/{DRIVE_ID}",
    f"http://[fe80::1]/drive/folders/{DRIVE_ID}",
    f"http://2130706433/drive/folders/{DRIVE_ID}",
    f"http://0x7f000001/drive/folders/{DRIVE_ID}",
    f"http://metadata.google.internal/drive/folders/{DRIVE_ID}",
    # malformed authorities and hidden characters
    f"https://[drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://drive.google.com:abc/drive/folders/{DRIVE_ID}",
    f"https://drive.google.com/drive/fol\nders/{DRIVE_ID}",
    f"https://drive.google.com/drive/folders/{DRIVE_ID}\r\nX-Injected: 1",
    f"https://drive.google.com\t/drive/folders/{DRIVE_ID}",
]


@pytest.mark.parametrize("link", REFUSED_LINKS)
def test_links_that_could_point_elsewhere_are_refused_when_parsed(link: str) -> None:
    with pytest.raises(InvalidSourceURL) as refused:
        parse_folder_url(link)
    message = str(refused.value)
    assert message.endswith((".", ")")) and "Traceback" not in message
    assert not any(ord(ch) < 0x20 for ch in message)


@pytest.mark.parametrize(
    ("link", "canonical"),
    [
        (f"{DRIVE}?usp=sharing#top", DRIVE),
        (f"HTTPS://DRIVE.GOOGLE.COM/drive/folders/{DRIVE_ID}", DRIVE),
        (f"  drive.google.com/drive/u/3/folders/{DRIVE_ID}/  ", DRIVE),
        (DROPBOX, "https://www.dropbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6"),
        (
            "https://dl.dropbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6&st=x&dl=1",
            "https://www.dropbox.com/scl/fo/abc123def456/AAxyz987?rlkey=k3y4b5c6",
        ),
    ],
)
def test_accepted_links_are_rebuilt_on_the_real_host(link: str, canonical: str) -> None:
    # What is stored and later fetched is rebuilt from the ids alone, never the pasted text.
    assert parse_folder_url(link).url == canonical


# -- the HTTP client's guard, with the real endpoints configured ------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://drive.google.com/drive/folders/x",  # downgraded to plain http
        "https://drive.google.com:8443/x",
        "https://evil.example/x",
        "https://drive.google.com.evil.example/x",
        "https://googleusercontent.com.evil.example/x",
        "http://doc-0s-1.googleusercontent.com/x",  # a CDN host, but not over https
        "https://dropboxusercontent.com.evil.example/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",
        "https://drive.google.com@evil.example/x",
    ],
)
def test_the_client_refuses_every_other_origin(url: str, tmp_path: Path) -> None:
    contacted: list[str] = []

    def transport(request: httpx.Request) -> httpx.Response:
        contacted.append(str(request.url))
        return httpx.Response(200)

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    with (
        make_http_client(settings, UNLIMITED, transport=httpx.MockTransport(transport)) as client,
        pytest.raises(ImageImportError, match="not a configured source host"),
    ):
        client.get(url)
    assert contacted == []


def test_the_client_allows_the_real_endpoints_and_their_https_cdns(tmp_path: Path) -> None:
    contacted: list[str] = []

    def transport(request: httpx.Request) -> httpx.Response:
        contacted.append(str(request.url))
        return httpx.Response(200)

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    allowed = [
        "https://www.googleapis.com/drive/v3/files",
        "https://drive.google.com/embeddedfolderview",
        "https://drive.usercontent.google.com/download",
        "https://doc-0s-1.googleusercontent.com/x",
        "https://api.dropboxapi.com/2/files/list_folder",
        "https://www.dropbox.com/scl/fo/a/b",
        "https://uc1234.dl.dropboxusercontent.com/zip_download_get/x",
    ]
    with make_http_client(settings, UNLIMITED, transport=httpx.MockTransport(transport)) as client:
        for url in allowed:
            assert client.get(url).status_code == 200
    assert contacted == allowed


# -- a fake that redirects elsewhere ----------------------------------------------------------


@pytest.fixture(scope="module")
def decoy() -> Iterator[tuple[RunningServer, list[str]]]:
    """A server on another loopback port that records whatever reaches it."""
    reached: list[str] = []

    async def record(scope: dict, receive: object, send: object) -> None:
        if scope["type"] == "http":
            reached.append(f"{scope['method']} {scope['path']}")
            await PlainTextResponse("secret metadata")(scope, receive, send)  # type: ignore[arg-type]

    with RunningServer(record) as server:  # type: ignore[arg-type]
        yield server, reached


def _targets(port: int) -> list[tuple[str, str]]:
    """(Location, the host the refusal names): the decoy in several spellings, and the cloud
    metadata address."""
    return [
        (f"http://127.0.0.1:{port}/steal", "127.0.0.1"),
        (f"http://localhost:{port}/steal", "localhost"),
        (f"http://[::ffff:127.0.0.1]:{port}/steal", "::ffff:127.0.0.1"),
        (f"http://2130706433:{port}/steal", "2130706433"),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
    ]


FOLDER = FakeFolder(
    "Redirected",
    [
        FakeFile("one.jpg", make_image(30, 20, "JPEG", seed=61), "image/jpeg"),
        FakeFile("two.png", make_image(20, 30, "PNG", seed=62), "image/png"),
    ],
)
# Requests whose answer is replaced by a redirect: the ones that list the folder (or fetch its
# ZIP, or the Dropbox access token), and the ones that download one file.
LISTING = {
    "gdrive-api": [r"^/drive/v3/files"],
    "gdrive-public": [r"^/embeddedfolderview"],
    "dropbox-api": [r"^/oauth2/token", r"^/2/files/list_folder"],
    "dropbox-zip": [r"^/scl/fo/", r"^/zip_download_get/"],
}
DOWNLOAD = {
    "gdrive-api": rf"^/drive/v3/files/{FOLDER.children[0].id}\?.*alt=media",
    "gdrive-public": rf"^/download\?id={FOLDER.children[0].id}",
    "dropbox-api": r"^/2/sharing/get_shared_link_file.*one\.jpg",
}


def _settings(route_settings: dict, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, source_retry_attempts=1, **route_settings
    )


def _read(source: object, file: RemoteFile) -> bytes:
    with source.open(file) as chunks:  # type: ignore[attr-defined]
        return b"".join(chunks)


@pytest.mark.parametrize("name", ROUTES)
def test_redirects_elsewhere_are_refused_by_every_route(
    name: str, decoy: tuple[RunningServer, list[str]], tmp_path: Path
) -> None:
    server, reached = decoy
    with serve_route(name, FOLDER) as route:
        settings = _settings(route.settings, tmp_path)
        for location, host in _targets(server.port):
            for pattern in LISTING[name]:
                route.tap.rules.clear()
                route.tap.redirect(pattern, location)
                with (
                    open_source(route.url, settings) as source,
                    pytest.raises(ImageImportError) as refused,
                ):
                    list(source.list())
                message = str(refused.value)
                assert f"Refused to contact {host}: it is not a configured source host" in (
                    message
                ), (pattern, location, message)
            if name in DOWNLOAD:
                route.tap.rules.clear()
                with open_source(route.url, settings) as source:
                    files = {f.name: f for f in source.list()}
                    route.tap.redirect(DOWNLOAD[name], location)
                    with pytest.raises(ImageImportError) as refused:
                        _read(source, files["one.jpg"])
                    assert f"Refused to contact {host}" in str(refused.value), location
                    # Only that file: the other one still downloads.
                    assert _read(source, files["two.png"]) == FOLDER.children[1].content
    assert reached == []


def test_a_download_form_that_posts_elsewhere_is_refused(
    decoy: tuple[RunningServer, list[str]], tmp_path: Path
) -> None:
    server, reached = decoy
    first = FOLDER.children[0]
    page = (
        "<html><body><form id='download-form' method='get' "
        f"action='http://localhost:{server.port}/uc'><input type='hidden' name='id' "
        f"value='{first.id}'></form></body></html>"
    ).encode()
    with serve_route("gdrive-public", FOLDER) as route:
        route.tap.answer(
            rf"^/download\?id={first.id}", 200, page, content_type="text/html; charset=utf-8"
        )
        with open_source(route.url, _settings(route.settings, tmp_path)) as source:
            files = {f.name: f for f in source.list()}
            with pytest.raises(ImageImportError, match="Refused to contact localhost"):
                _read(source, files["one.jpg"])
    assert reached == []


@pytest.mark.parametrize("name", [n for n in ROUTES if n in DOWNLOAD])
def test_a_redirected_file_fails_alone_in_an_import(
    name: str,
    decoy: tuple[RunningServer, list[str]],
    make_settings: SettingsFactory,
) -> None:
    server, reached = decoy
    with serve_route(name, FOLDER) as route:
        route.tap.redirect(DOWNLOAD[name], f"http://localhost:{server.port}/steal")
        settings = make_settings(**route.settings)
        with imported(settings, route.url) as (runtime, result):
            items = items_by_path(runtime, result.import_id)
            assert result.state == "completed_with_failures", result.error
            assert items["two.png"].state == "done"
            failed = items["one.jpg"]
            assert failed.state == "failed"
            assert failed.reason is not None
            assert "Refused to contact localhost: it is not a configured source host" in (
                failed.reason
            )
            # Refused for good on the first attempt, not retried until MAX_DELIVER.
            assert failed.attempts == 0
            assert_contained(runtime, settings.data_dir)
    assert reached == []


@pytest.mark.parametrize("name", ROUTES)
def test_a_redirected_listing_fails_the_import_with_the_reason(
    name: str,
    decoy: tuple[RunningServer, list[str]],
    make_settings: SettingsFactory,
) -> None:
    _, reached = decoy
    with serve_route(name, FOLDER) as route:
        route.tap.redirect(LISTING[name][-1], "http://169.254.169.254/latest/meta-data/")
        settings = make_settings(**route.settings)
        with imported(settings, route.url) as (_, result):
            assert result.state == "failed"
            assert "Refused to contact 169.254.169.254" in (result.error or "")
    assert reached == []
