"""The web page in a real (headless) Chromium against a real `imageimport serve`: paste a
folder link, watch the import finish, browse the gallery and the lightbox, on a desktop and a
phone-sized screen, with and without an API token.

Screenshots go to test-output/page-*.png at the repository root."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageimport.settings import Settings
from tests.fakes.folder import (
    FakeFile,
    FakeFolder,
    big_folder,
    lean_folder,
    make_image,
    sample_folder,
)
from tests.fakes.gdrive import FakeDrive
from tests.fakes.server import FaultPlan
from tests.pipeline.routes import start_route
from tests.servers import free_port

# Never let Playwright fetch a browser of its own: Debian's Chromium is used.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the `playwright` package is not installed"
)
expect = sync_api.expect
# Generous: the first test to run may have to apt-get install Chromium.
pytestmark = pytest.mark.timeout(900)

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A name that resolves to this machine, as an attacker's does once rebound (DNS rebinding).
    "--host-resolver-rules=MAP rebound.test 127.0.0.1",
    # Chromium's own defence against rebinding (Private/Local Network Access) off: the test is
    # of the server's, which Firefox, Safari and older browsers depend on.
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults,"
    "BlockInsecurePrivateNetworkRequests",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
START_TIMEOUT = 60.0
IMPORT_TIMEOUT_MS = 120_000

# A file name that is also HTML: it must show up as text and never run.
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">.png'
_SAMPLE, EXPECTED = sample_folder()
FOLDER = FakeFolder(
    "Page test",
    [
        *_SAMPLE.children,
        FakeFile(HOSTILE_NAME, make_image(120, 90, "PNG", seed=31), "image/png"),
    ],
)
IMAGE_COUNT = len(EXPECTED.images) + 1
SMALL_FOLDER = FakeFolder(
    "Token test",
    [
        FakeFile("first.png", make_image(60, 40, "PNG", seed=41), "image/png"),
        FakeFile("second.jpg", make_image(70, 50, "JPEG", seed=42), "image/jpeg"),
    ],
)

# Counts every EventSource the page opens, and keeps them to check they were closed.
COUNT_EVENT_SOURCES = """
window.__eventSources = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(...args) { super(...args); window.__eventSources.push(this); }
};
"""
ALL_THUMBNAILS_LOADED = """() => {
  const images = [...document.querySelectorAll('#gallery-grid img')];
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""


# -- Chromium -----------------------------------------------------------------------------------


def _ensure_chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.geteuid() != 0:
        pytest.skip(
            f"{CHROMIUM} is missing and installing it (apt-get install chromium) needs root."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing.")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _ensure_chromium()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=LAUNCH_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


# -- the server ---------------------------------------------------------------------------------


@dataclass
class PageServer:
    base: str
    folder_url: str
    log: Path
    drive: FakeDrive  # the fake Drive it imports from, to change the folder under it

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.base + path, timeout=10, **kwargs)


def _clean_environment() -> dict[str, str]:
    # Settings read the environment: one left over from CI (DATABASE_URL, NATS_URL, S3_*,
    # API_TOKEN, …) must not redirect the server under test.
    names = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}
    return {key: value for key, value in os.environ.items() if key.upper() not in names}


@contextlib.contextmanager
def serve(
    tmp_path: Path, folder: FakeFolder, faults: FaultPlan | None = None, **settings: str
) -> Iterator[PageServer]:
    """`imageimport serve` on a free port, importing from a fake Google Drive."""
    with start_route("gdrive-api", folder, faults) as route:
        port = free_port()
        env = _clean_environment()
        env.update(route.env)
        env.update(
            DATA_DIR=str(tmp_path / "data"),
            MAX_FILE_SIZE_BYTES=str(EXPECTED.oversized_bytes),
            CONCURRENCY="2",
        )
        env.update({key.upper(): value for key, value in settings.items()})
        log = tmp_path / "serve.log"
        argv = [sys.executable, "-m", "imageimport", "serve", "--host", "127.0.0.1"]
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*argv, "--port", str(port)],
                cwd=tmp_path,  # no stray .env from the repository
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            drive = route.server.app.app.state.drive  # type: ignore[attr-defined]
            server = PageServer(f"http://127.0.0.1:{port}", route.url, log, drive)
            _wait_healthy(server, process)
            yield server
        finally:
            _stop(process)


def _wait_healthy(server: PageServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"imageimport serve exited at start-up:\n{server.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if server.api("GET", "/healthz").status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"imageimport serve was not healthy in time:\n{server.log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[PageServer]:
    with serve(tmp_path, FOLDER) as server:
        yield server


# -- helpers ------------------------------------------------------------------------------------


def _shot(page: Any, name: str, *, full_page: bool = False) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"page-{name}.png"), full_page=full_page)


def _watch_for_trouble(page: Any) -> list[str]:
    """Script errors, alert()s and anything the Content-Security-Policy blocked end up in the
    returned list (which must stay empty)."""
    trouble: list[str] = []
    page.on("pageerror", lambda error: trouble.append(f"page error: {error}"))

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            trouble.append(f"blocked: {message.text}")

    page.on("console", on_console)

    def on_dialog(dialog: Any) -> None:
        trouble.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return trouble


def _focus_inside(page: Any, selector: str) -> bool:
    return bool(
        page.evaluate("(s) => document.querySelector(s).contains(document.activeElement)", selector)
    )


def _no_horizontal_overflow(page: Any, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width} px wide on a {width} px screen"


# -- tests --------------------------------------------------------------------------------------


def test_import_progress_gallery_and_lightbox(browser: Any, page_server: PageServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(COUNT_EVENT_SOURCES)
    page = context.new_page()
    trouble = _watch_for_trouble(page)
    page.goto(page_server.base + "/")

    expect(page.locator("header .brand__name")).to_have_text("imageimport")
    expect(page.locator("#gallery-status")).to_contain_text("No images yet — import a folder above")
    expect(page.locator("#recent-status")).to_contain_text("No imports yet")
    _shot(page, "empty")

    # A link that is no folder: the API's sentence shows under the field.
    bad_link = "https://example.com/photos/not-a-folder"
    wanted = page_server.api("POST", "/api/v1/imports", json={"url": bad_link, "options": {}})
    assert wanted.status_code == 422
    field = page.locator("#folder-url")
    field.fill(bad_link)
    page.locator("#import-submit").click()
    error = page.locator("#folder-url-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(wanted.json()["detail"])
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#progress")).to_be_hidden()
    _shot(page, "invalid-link")
    field.fill("")
    expect(error).to_be_hidden()  # editing clears the error state
    page.locator("#import-submit").click()
    expect(error).to_contain_text("Paste the link")

    # The real folder: progress streams in until the import is finished.
    field.fill(page_server.folder_url)
    page.locator("#import-submit").click()
    expect(error).to_be_hidden()
    progress = page.locator("#progress")
    expect(progress).to_be_visible()
    state = page.locator("#progress-state")
    expect(state).to_have_attribute(
        "data-state", "completed_with_failures", timeout=IMPORT_TIMEOUT_MS
    )
    expect(state).to_have_text("Completed with failures")
    expect(page.locator("#progress-percent")).to_have_text("100%")
    expect(page.locator("#progress-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#count-discovered")).to_have_text(str(len(FOLDER.files())))
    expect(page.locator("#count-imported")).to_have_text(str(IMAGE_COUNT))
    expect(page.locator("#count-duplicates")).to_have_text(str(len(EXPECTED.duplicates)))
    expect(page.locator("#count-skipped")).to_have_text(str(len(EXPECTED.skipped)))
    expect(page.locator("#count-failed")).to_have_text(str(len(EXPECTED.failed)))
    expect(page.locator("#progress-rate")).to_contain_text("files/s")
    expect(page.locator("#progress-rate")).to_contain_text("MB/s")
    failed = page.locator("#failed-list > li")
    expect(failed).to_have_count(len(EXPECTED.failed))
    expect(page.locator("#failed-list")).to_contain_text("huge.jpg")
    expect(page.locator("#failed-list")).to_contain_text("too large")
    expect(page.locator("#failed-list")).to_contain_text("broken.jpg")
    expect(page.locator("#retry-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_be_hidden()
    # It was fed by server-sent events, and the stream was closed at the end event.
    streams = page.evaluate("window.__eventSources.map((source) => source.readyState)")
    assert streams, "the progress view never opened an EventSource"
    assert all(ready == 2 for ready in streams), f"EventSource left open: {streams}"

    recent = page.locator("#recent-list button[data-id]")
    expect(recent).to_have_count(1)
    expect(recent.first).to_have_attribute("aria-current", "true")
    expect(recent.first).to_contain_text("Completed with failures")
    import_id = recent.first.get_attribute("data-id")
    assert import_id
    expect(page.locator("#gallery-filter option")).to_have_count(2)

    # The gallery shows every imported image as a rendered thumbnail.
    images = page_server.api("GET", "/api/v1/images?limit=100").json()["items"]
    assert len(images) == IMAGE_COUNT
    tiles = page.locator("#gallery-grid button.thumb")
    expect(tiles).to_have_count(IMAGE_COUNT)
    expect(page.locator("#gallery-status")).to_contain_text(f"{IMAGE_COUNT} images")
    page.locator("#gallery-heading").scroll_into_view_if_needed()
    page.wait_for_function(ALL_THUMBNAILS_LOADED)
    assert page.eval_on_selector_all(
        "#gallery-grid img", "(imgs) => imgs.every((img) => img.getAttribute('loading') === 'lazy')"
    )
    # The hostile name is plain text: no extra element, no script run.
    assert page.locator("#gallery-grid img").count() == IMAGE_COUNT
    hostile = page.locator("#gallery-grid .thumb__caption", has_text=HOSTILE_NAME)
    expect(hostile).to_have_count(1)
    assert page.evaluate("window.__pwned") is None
    _shot(page, "desktop", full_page=True)

    # The lightbox, opened on the photo with EXIF metadata.
    red_index = next(i for i, image in enumerate(images) if image["camera"])
    red = images[red_index]
    red_tile = page.locator(f'#gallery-grid button.thumb[data-id="{red["id"]}"]')
    red_tile.click()
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_be_visible()
    expect(lightbox).to_have_attribute("open", "")
    expect(page.locator("#lightbox-title")).to_have_text(red["name"])
    picture = page.locator("#lightbox-image")
    expect(picture).to_have_attribute("src", _ends_with(red["links"]["content"]))
    expect(picture).to_have_attribute("data-kind", "content")
    assert picture.evaluate("(img) => img.naturalWidth") == red["width"]
    meta = page.locator("#lightbox-meta")
    expect(meta.locator('[data-field="path"] dd')).to_have_text(red["path"])
    expect(meta.locator('[data-field="dimensions"] dd')).to_have_text("640 \u00d7 480 px")
    expect(meta.locator('[data-field="format"] dd')).to_have_text("JPEG")
    expect(meta.locator('[data-field="camera"] dd')).to_have_text("Canon EOS 5D")
    expect(meta.locator('[data-field="taken"] dd')).not_to_have_text("Unknown")
    expect(meta.locator('[data-field="size"] dd')).to_have_text(_human_size(red["size"]))
    expect(meta.locator('[data-field="source"] dd')).to_have_text("Google Drive")
    expect(page.locator("#lightbox-position")).to_have_text(f"{red_index + 1} of {IMAGE_COUNT}")
    assert _focus_inside(page, "#lightbox")
    for _ in range(6):  # Tab cycles inside the dialog, never back to the page
        page.keyboard.press("Tab")
        assert _focus_inside(page, "#lightbox")
    page.keyboard.press("Shift+Tab")
    assert _focus_inside(page, "#lightbox")
    _shot(page, "lightbox")

    # Arrow keys walk the gallery's order (newest first); at the last image → does nothing.
    if red_index + 1 < len(images):
        steps = [
            ("ArrowRight", red_index + 1),
            ("ArrowLeft", red_index),
            ("ArrowRight", red_index + 1),
        ]
    else:
        steps = [("ArrowLeft", red_index - 1), ("ArrowRight", red_index), ("ArrowRight", red_index)]
    for key, index in steps:
        page.keyboard.press(key)
        expect(page.locator("#lightbox-title")).to_have_text(images[index]["name"])
        expect(picture).to_have_attribute("src", _ends_with(images[index]["links"]["content"]))
        expect(page.locator("#lightbox-position")).to_have_text(f"{index + 1} of {IMAGE_COUNT}")
        assert _focus_inside(page, "#lightbox"), f"focus left the lightbox after {key}"
    expect(page.locator("#lightbox-next")).to_be_enabled(enabled=index + 1 < len(images))
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    # Focus goes back to the thumbnail of the image last shown, at once: not first to the one
    # that opened the lightbox (where dialog.close() puts it) until the close event comes.
    focused = page.evaluate("document.activeElement.dataset.id")
    assert focused == str(images[index]["id"])

    # The hostile file in the lightbox: its name is text.
    hostile.click()
    expect(page.locator("#lightbox-title")).to_have_text(HOSTILE_NAME)
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()

    # Filtering by import keeps the images this import found.
    page.locator("#gallery-filter").select_option(import_id)
    expect(tiles).to_have_count(IMAGE_COUNT)

    # Retry: the failed files are tried again and the view follows the import anew.
    with page.expect_response(lambda r: r.url.endswith("/retry")) as retried:
        page.locator("#retry-button").click()
    assert retried.value.status == 202
    expect(state).to_have_attribute(
        "data-state", "completed_with_failures", timeout=IMPORT_TIMEOUT_MS
    )
    expect(page.locator("#retry-button")).to_be_visible()
    expect(failed).to_have_count(len(EXPECTED.failed))
    streams = page.evaluate("window.__eventSources.map((source) => source.readyState)")
    assert len(streams) == 2, "the retried import was not followed with a new stream"
    assert all(ready == 2 for ready in streams), f"EventSource left open: {streams}"

    # On a phone-sized screen: one column form, 2-3 thumbnails a row, no sideways scroll.
    phone = browser.new_context(
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    mobile = phone.new_page()
    trouble += _watch_for_trouble(mobile)
    mobile.goto(f"{page_server.base}/#import={import_id}")
    expect(mobile.locator("#progress-state")).to_have_text("Completed with failures")
    expect(mobile.locator("#gallery-grid button.thumb")).to_have_count(IMAGE_COUNT)
    _no_horizontal_overflow(mobile, 375)
    field_box = mobile.locator("#folder-url").bounding_box()
    button_box = mobile.locator("#import-submit").bounding_box()
    assert field_box and button_box
    assert button_box["y"] >= field_box["y"] + field_box["height"], "form is not one column"
    lefts = mobile.eval_on_selector_all(
        "#gallery-grid .grid__item",
        "(items) => [...new Set(items.map((i) => Math.round(i.getBoundingClientRect().left)))]",
    )
    assert 2 <= len(lefts) <= 3, f"{len(lefts)} thumbnails per row"
    _shot(mobile, "mobile")
    _shot(mobile, "mobile-full", full_page=True)
    mobile.locator("#gallery-grid button.thumb").first.click()
    expect(mobile.locator("#lightbox-image")).to_have_attribute("data-kind", "content")
    _no_horizontal_overflow(mobile, 375)
    _shot(mobile, "mobile-lightbox")
    phone.close()

    assert trouble == []
    context.close()


def _ends_with(path: str) -> re.Pattern[str]:
    return re.compile(re.escape(path) + "$")


def _human_size(size: int) -> str:
    # Mirrors format.js: decimal units, one decimal below 100.
    value, unit = float(size), "B"
    for next_unit in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, next_unit
    return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"


def test_api_token_prompt_then_polling(browser: Any, tmp_path: Path) -> None:
    token = "page-test-token"
    with serve(tmp_path, SMALL_FOLDER, api_token=token) as server:
        assert server.api("GET", "/api/v1/imports").status_code == 401
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        context.add_init_script(COUNT_EVENT_SOURCES)
        page = context.new_page()
        trouble = _watch_for_trouble(page)
        page.goto(server.base + "/")

        # A wrong token is refused and asked for again; the right one is kept.
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        _shot(page, "token-prompt")
        page.locator("#token-input").fill("wrong-token")
        page.locator("#token-form button[type=submit]").click()
        expect(page.locator("#token-message")).to_contain_text("not accepted")
        expect(dialog).to_be_visible()
        page.locator("#token-input").fill(token)
        page.locator("#token-form button[type=submit]").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#recent-status")).to_contain_text("No imports yet")
        stored = page.evaluate("localStorage.getItem('imageimport.apiToken')")
        assert stored == token

        # EventSource cannot send the token: the progress view polls instead.
        page.locator("#folder-url").fill(server.folder_url)
        page.locator("#import-submit").click()
        expect(page.locator("#progress-state")).to_have_attribute(
            "data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS
        )
        expect(page.locator("#progress-percent")).to_have_text("100%")
        expect(page.locator("#count-imported")).to_have_text("2")
        assert page.evaluate("window.__eventSources.length") == 0

        # Thumbnails need the token too: fetched by script, shown from blob: URLs.
        expect(page.locator("#gallery-grid button.thumb")).to_have_count(2)
        page.wait_for_function(ALL_THUMBNAILS_LOADED)
        sources = page.eval_on_selector_all("#gallery-grid img", "(imgs) => imgs.map((i) => i.src)")
        assert all(source.startswith("blob:") for source in sources)
        page.locator("#gallery-grid button.thumb").first.click()
        expect(page.locator("#lightbox-image")).to_have_attribute("data-kind", "content")
        assert page.locator("#lightbox-image").evaluate("(img) => img.naturalWidth") > 0
        page.keyboard.press("Escape")

        # A reload remembers the token: no second prompt.
        page.reload()
        expect(page.locator("#recent-list button[data-id]")).to_have_count(1)
        expect(dialog).to_be_hidden()
        assert trouble == []
        context.close()


def test_cancel_a_running_import(browser: Any, tmp_path: Path) -> None:
    # A slow Drive keeps the import running long enough to cancel it.
    with serve(tmp_path, big_folder(40, seed=5), FaultPlan(latency=0.25)) as server:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        trouble = _watch_for_trouble(page)
        page.goto(server.base + "/")
        page.locator("#folder-url").fill(server.folder_url)
        page.locator("#import-submit").click()
        state = page.locator("#progress-state")
        cancel = page.locator("#cancel-button")
        expect(cancel).to_be_visible()
        expect(state).to_have_attribute("data-state", "importing")
        expect(page.locator("#progress-percent")).to_have_text(re.compile(r"^\d+%$"))
        page.wait_for_timeout(600)  # let the smooth scroll to the progress view settle
        _shot(page, "running")
        cancel.click()
        expect(state).to_have_attribute("data-state", "cancelled", timeout=30_000)
        expect(state).to_have_text("Cancelled")
        expect(cancel).to_be_hidden()
        expect(page.locator("#retry-button")).to_be_hidden()
        expect(page.locator("#recent-list button[data-id]").first).to_contain_text("Cancelled")
        imported = int(page.locator("#count-imported").inner_text())
        assert imported < 40
        assert trouble == []
        context.close()


def test_the_gallery_places_an_image_that_was_committed_late(browser: Any, tmp_path: Path) -> None:
    """Workers commit concurrently: an image can become visible after one with a higher id was
    already shown. The gallery's listings miss the middle image until it is "committed"."""
    folder = FakeFolder(
        "Late commit",
        [FakeFile(f"late-{i}.png", make_image(50 + i, 40, "PNG", seed=60 + i)) for i in range(3)],
    )
    with serve(tmp_path, folder) as server:
        started = server.api("POST", "/api/v1/imports", json={"url": server.folder_url}).json()
        deadline = time.monotonic() + 60
        while server.api("GET", f"/api/v1/imports/{started['id']}").json()["state"] != (
            "succeeded"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ids = [image["id"] for image in server.api("GET", "/api/v1/images").json()["items"]]
        assert len(ids) == 3
        late = ids[1]

        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        trouble = _watch_for_trouble(page)
        committed = False

        def listing(route: Any) -> None:
            response = route.fetch()
            body = response.json()
            if not committed:
                body["items"] = [image for image in body["items"] if image["id"] != late]
            route.fulfill(response=response, json=body)

        page.route(re.compile(r".*/api/v1/images(\?.*)?$"), listing)
        page.goto(server.base + "/")
        tiles = page.locator("#gallery-grid button.thumb")
        expect(tiles).to_have_count(2)
        page.wait_for_timeout(500)
        expect(tiles).to_have_count(2)

        # Importing the folder again finds its files unchanged, which refreshes the gallery.
        committed = True
        page.locator("#folder-url").fill(server.folder_url)
        page.locator("#import-submit").click()
        expect(page.locator("#progress-state")).to_have_attribute(
            "data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS
        )
        expect(tiles).to_have_count(3)
        expect(page.locator("#count-unchanged")).to_have_text("3")
        shown = tiles.evaluate_all("(buttons) => buttons.map((b) => b.dataset.id)")
        assert shown == [str(i) for i in ids]
        assert trouble == []
        context.close()


def test_sync_now_imports_what_changed_and_shows_the_round(browser: Any, tmp_path: Path) -> None:
    folder = FakeFolder(
        "Sync test",
        [FakeFile(f"sync-{i}.png", make_image(40 + i, 30, "PNG", seed=70 + i)) for i in range(3)],
    )
    files = dict(folder.files())
    faults = FaultPlan()
    with serve(tmp_path, folder, faults) as server:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        trouble = _watch_for_trouble(page)
        page.goto(server.base + "/")
        sync = page.locator("#sync-button")
        summary = page.locator("#sync-summary")
        state = page.locator("#progress-state")
        page.locator("#folder-url").fill(server.folder_url)
        page.locator("#import-submit").click()
        expect(state).to_have_attribute("data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS)
        expect(sync).to_be_visible()
        expect(sync).to_be_enabled()
        expect(summary).to_be_hidden()  # no round yet
        tiles = page.locator("#gallery-grid button.thumb")
        expect(tiles).to_have_count(3)

        # One file changed, one added, one removed at the source; pruning asked for.
        files["sync-0.png"].overwrite(make_image(60, 30, "PNG", seed=80))
        server.drive.add(folder, FakeFile("sync-new.png", make_image(30, 30, "PNG", seed=81)))
        server.drive.remove(files["sync-2.png"])
        page.locator("#sync-prune").check()
        with page.expect_response(lambda r: r.url.endswith("/sync")) as synced:
            sync.click()
        assert synced.value.status == 202
        assert synced.value.request.post_data_json == {"prune": True}
        expect(state).to_have_attribute("data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS)
        expect(summary).to_contain_text(
            "1 added, 1 changed, 1 unchanged, 1 gone, 1 image deleted", timeout=IMPORT_TIMEOUT_MS
        )
        expect(sync).to_be_enabled()
        expect(page.locator("#sync-prune")).not_to_be_checked()
        expect(page.locator("#count-discovered")).to_have_text("3")
        # The gallery follows: the new file and the changed file's new version are in, the
        # removed file's image is gone, and the changed file's first version stays.
        expect(tiles).to_have_count(4)
        _shot(page, "synced")

        # While a round runs (a slow Drive keeps it running), the button is disabled.
        server.drive.add(folder, FakeFile("sync-late.png", make_image(32, 30, "PNG", seed=82)))
        faults.latency = 0.5
        sync.click()
        expect(sync).to_be_disabled()
        expect(summary).to_contain_text("Sync round 2 started")
        expect(state).to_have_attribute("data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS)
        expect(summary).to_contain_text("1 added, 0 changed, 3 unchanged, 0 gone.")
        expect(sync).to_be_enabled()
        latest = server.api("GET", "/api/v1/imports").json()["items"][0]
        assert (latest["last_sync"]["round"], latest["last_sync"]["prune"]) == (2, False)
        assert trouble == []
        context.close()


def test_other_sites_can_neither_frame_nor_rebind_the_page(browser: Any, tmp_path: Path) -> None:
    with serve(tmp_path, SMALL_FOLDER) as server:
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        page = context.new_page()

        # A page on another site framing ours (clickjacking its Import button): the browser
        # shows nothing of ours in the frame.
        framing = f'<h1>Win a prize</h1><iframe src="{server.base}/" width="900" height="600">'
        page.route(
            "http://attacker.test/",
            lambda route: route.fulfill(status=200, content_type="text/html", body=framing),
        )
        page.goto("http://attacker.test/")
        page.wait_for_load_state("load")
        (framed,) = [frame for frame in page.frames if frame is not page.main_frame]
        page.wait_for_timeout(500)
        assert framed.evaluate("document.getElementById('import-form')") is None
        _shot(page, "framed")

        # DNS rebinding: the attacker's page comes from the attacker's server; then its name
        # resolves to this machine, and its script is "same-origin" with our server, which
        # refuses the foreign Host instead.
        attacker = f"http://rebound.test:{server.base.rsplit(':', 1)[1]}/"
        page.route(
            attacker,
            lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Hi</p>"),
        )
        page.goto(attacker)
        page.unroute(attacker)  # the name now leads to 127.0.0.1
        statuses = page.evaluate(
            """async (url) => [
                 (await fetch('/api/v1/imports', {method: 'POST',
                   headers: {'Content-Type': 'application/json'},
                   body: JSON.stringify({url})})).status,
                 (await fetch('/api/v1/imports')).status,
                 (await fetch('/')).status,
               ]""",
            server.folder_url,
        )
        assert statuses == [400, 400, 400]
        assert server.api("GET", "/api/v1/imports").json()["items"] == []
        response = page.goto(attacker)
        assert response is not None and response.status == 400

        # From this machine's own name the page works, with nothing blocked by its policy.
        trouble = _watch_for_trouble(page)
        page.goto(server.base + "/")
        page.locator("#folder-url").fill(server.folder_url)
        page.locator("#import-submit").click()
        expect(page.locator("#progress-state")).to_have_attribute(
            "data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS
        )
        expect(page.locator("#gallery-grid button.thumb")).to_have_count(2)
        page.wait_for_function(ALL_THUMBNAILS_LOADED)
        assert trouble == []
        context.close()


def test_a_lean_import_shows_placeholders_then_thumbnails_and_marks_corrupt_images(
    browser: Any, tmp_path: Path
) -> None:
    lean = lean_folder("Page lean")
    with serve(tmp_path, FakeFolder("Page modes", [lean.folder, SMALL_FOLDER])) as server:
        link = f"https://drive.google.com/drive/folders/{lean.folder.id}?usp=sharing"
        started = server.api(
            "POST", "/api/v1/imports", json={"url": link, "options": {"mode": "lean"}}
        ).json()
        deadline = time.monotonic() + 60
        while server.api("GET", f"/api/v1/imports/{started['id']}").json()["state"] != (
            "succeeded"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        images = server.api("GET", "/api/v1/images").json()["items"]
        assert {image["state"] for image in images} == {"unverified"}
        # The originals out of reach for a while: no thumbnail can be made, and the page
        # shows the server's placeholders in their place.
        objects = tmp_path / "data" / "objects"
        away = tmp_path / "away"
        away.mkdir()
        originals = {i["sha256"]: next(objects.glob(f"images/*/{i['sha256']}.*")) for i in images}
        for sha256, original in originals.items():
            original.rename(away / sha256)

        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        trouble = _watch_for_trouble(page)
        page.goto(server.base + "/")
        expect(page.locator("#gallery-grid button.thumb")).to_have_count(len(images))
        page.wait_for_function(ALL_THUMBNAILS_LOADED)
        assert _shown_sizes(page) == {image["path"]: (400, 400) for image in images}
        assert page.locator("#gallery-grid .grid__item--broken").count() == 0
        _shot(page, "lean-placeholders")

        # Back: the page asks again, and each thumbnail is made and shown.
        for sha256, original in originals.items():
            (away / sha256).rename(original)
        expected = {
            image["path"]: _fit(image["width"], image["height"])
            for image in images
            if image["path"] in lean.good
        }
        page.wait_for_function(
            """(count) => document.querySelectorAll(
                '#gallery-grid li[data-state="ready"], #gallery-grid li[data-state="corrupt"]'
            ).length === count""",
            arg=len(images),
            timeout=60_000,
        )
        page.wait_for_function(ALL_THUMBNAILS_LOADED)
        shown = _shown_sizes(page)
        assert {path: shown[path] for path in lean.good} == expected
        for path in lean.corrupt:
            tile = page.locator("#gallery-grid li", has=page.get_by_title(path, exact=True))
            expect(tile).to_have_attribute("data-state", "corrupt")
            expect(tile.locator(".thumb__state")).to_have_text("Corrupt")
            assert shown[path] == (400, 400)  # the corrupt placeholder
        assert page.locator("#gallery-grid .grid__item--broken").count() == 0
        _shot(page, "lean-thumbnails")

        # The form's choice: this import runs lean too.
        page.locator("#folder-url").fill(
            f"https://drive.google.com/drive/folders/{SMALL_FOLDER.id}?usp=sharing"
        )
        page.locator("#import-mode").select_option("lean")
        page.locator("#import-submit").click()
        expect(page.locator("#progress-state")).to_have_attribute(
            "data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS
        )
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "imageimport.db")) as db:
            recorded = [json.loads(row[0]) for row in db.execute("SELECT options FROM imports")]
        assert recorded == [{"mode": "lean"}, {"mode": "lean"}]  # the API's, then the page's
        assert trouble == []
        context.close()


def _shown_sizes(page: Any) -> dict[str, tuple[int, int]]:
    """The natural size of what each tile's <img> shows, by the tile's file name."""
    sizes = page.eval_on_selector_all(
        "#gallery-grid button.thumb",
        "(buttons) => buttons.map((b) => [b.title, b.querySelector('img').naturalWidth,"
        " b.querySelector('img').naturalHeight])",
    )
    return {title: (width, height) for title, width, height in sizes}


def _fit(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, 400 / width, 400 / height)
    return round(width * scale), round(height * scale)
