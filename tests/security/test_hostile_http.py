"""Hostile HTTP answers: bodies compressed in layers (a 2 KB answer marked `gzip, gzip` that
inflates to a gigabyte), garbled or oddly encoded bodies, redirect loops and invalid
redirects, on every route and every HTTP stack a stranger's answer reaches (httpx for the
Drive routes and the ZIP, requests for the Dropbox SDK, httplib2 for the Drive API listing).

Memory is measured on `imageimport import` run as its own process: the kernel's peak
resident size (VmHWM) of a hostile import must stay within an ordinary import's peak of the
same folder plus MARGIN, whatever the answer inflates to. Protocol errors are asserted by
state, reason and attempts: a permanent problem fails the file or the listing at once, with a
sentence, and never as an "unexpected" error with a traceback."""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from imageimport.db.models import Import, ImportItem
from imageimport.pipeline.download import SPOOL_BYTES
from imageimport.settings import Settings
from imageimport.sources.http import CHUNK_SIZE
from tests.commands import Measured, run_measured
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.security.conftest import Route, SettingsFactory, imported, items_by_path, serve_route

MiB = 1024 * 1024
GiB = 1024 * MiB
LIMIT = 10 * MiB  # MAX_FILE_SIZE_BYTES of these imports
CONCURRENCY = 2
# What a hostile answer may add to an ordinary import's peak: each of the CONCURRENCY workers
# holds at most the in-memory part of its download spool (SPOOL_BYTES, then it goes to disk)
# and a few decoded chunks (CHUNK_SIZE each: the raw chunk, the inflated one, the copies
# httpx's chunker and the hash make); plus 32 MiB for the allocator and the interpreter's
# own noise between two runs. A layered bomb below inflates to BOMB_BYTES, 20 times this.
MARGIN = CONCURRENCY * (SPOOL_BYTES + 4 * CHUNK_SIZE) + 32 * MiB
BOMB_BYTES = 1 * GiB
MAX_REDIRECTS = 10  # what every source client follows (sources/http.py, the Dropbox session)
_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}

PICTURES = [FakeFile(f"p{n}.jpg", make_image(40, 30, "JPEG", seed=500 + n)) for n in range(3)]
BOMB = FakeFile("bomb.jpg", make_image(40, 30, "JPEG", seed=599), "image/jpeg")
FOLDER = FakeFolder("Compressed", [*PICTURES, BOMB])


# -- hostile bodies ------------------------------------------------------------------------


@functools.cache
def gzip_bomb(size: int, layers: int, head: bytes = b"") -> bytes:
    """`head` then zero bytes up to `size`, gzipped `layers` times: 1 GiB in two layers is
    about 2 KB. With an image's head, the sniff takes it for an image and reads on."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    data = (
        compressor.compress(head)
        + b"".join(compressor.compress(block) for _ in range(size // MiB))
        + compressor.flush()
    )
    for _ in range(layers - 1):
        data = gzip.compress(data, 9)
    return data


@functools.cache
def gzip_at_ratio_below_100(size: int) -> bytes:
    """One gzip layer that inflates about 85 times: under the 100x that httplib2's own
    LimitDecoder allows past 10 MiB, so it alone would inflate all of it."""
    runs = os.urandom(4 * MiB // 220)
    block = b"".join(bytes([byte]) * 220 for byte in runs)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return (
        b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()
    )


def dropbox_result(file: FakeFile, link: str) -> str:
    """The Dropbox-API-Result header the SDK parses before it reads any body."""
    return json.dumps(
        {
            ".tag": "file",
            "url": link,
            "id": "id:bomb0000000000000",
            "name": file.name,
            "link_permissions": {
                "can_revoke": False,
                "visibility_policies": [],
                "can_set_expiry": False,
                "can_remove_expiry": False,
                "allow_download": True,
                "can_allow_download": False,
                "can_disallow_download": False,
                "allow_comments": True,
                "team_restricts_comments": False,
                "resolved_visibility": {".tag": "public"},
            },
            "client_modified": "2024-05-01T12:00:00Z",
            "server_modified": "2024-05-01T12:00:00Z",
            "rev": "0123456789abcdef0",
            "size": file.length,
        }
    )


def file_target(route: Route, file: FakeFile) -> str:
    """A regex for the request that downloads `file` on this route (see Tap.seen)."""
    return {
        "gdrive-api": rf"^/drive/v3/files/{file.id}\?alt=media",
        "gdrive-public": rf"^/download\?id={file.id}&",
        "dropbox-api": rf"^/2/sharing/get_shared_link_file\?.*\"/{file.name}\"",
    }[route.name]


LISTING_TARGET = {
    "gdrive-api": rf"^/drive/v3/files/{FOLDER.id}\?",  # files.get on the folder, first
    "gdrive-public": r"^/embeddedfolderview\?",
    "dropbox-api": r"^/2/files/list_folder\?",
    "dropbox-zip": r"^/zip_download_get/",  # where the dl=1 link redirects to
}


def answer_file(route: Route, file: FakeFile, body: bytes, encoding: str) -> None:
    headers = {"content_encoding": encoding, "content_type": "image/jpeg"}
    if route.name == "gdrive-public":
        headers["content_disposition"] = f'attachment; filename="{file.name}"'
    if route.name == "dropbox-api":
        headers["dropbox_api_result"] = dropbox_result(file, route.url)
    route.tap.answer(file_target(route, file), 200, body, **headers)


# -- imageimport as its own process ------------------------------------------------------------


@dataclass
class Outcome:
    measured: Measured
    state: str
    error: str | None
    items: dict[str, tuple[str, str | None, int]]  # name: (state, reason, attempts)


def import_measured(route: Route, data_dir: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env |= route.env | {
        "DATA_DIR": str(data_dir),
        "MAX_FILE_SIZE_BYTES": str(LIMIT),
        "MAX_DELIVER": "3",
        "SOURCE_RETRY_MAX_WAIT_SECONDS": "0.5",
        "CONCURRENCY": str(CONCURRENCY),
    }
    measured = run_measured("import", route.url, env=env, cwd=data_dir.parent, timeout=240)
    engine = create_engine(f"sqlite:///{data_dir / 'imageimport.db'}")
    try:
        with engine.connect() as connection:
            state, error = connection.execute(select(Import.state, Import.error)).one()
            rows = connection.execute(
                select(ImportItem.name, ImportItem.state, ImportItem.reason, ImportItem.attempts)
            ).all()
    finally:
        engine.dispose()
    items = {name: (item_state, reason, attempts) for name, item_state, reason, attempts in rows}
    return Outcome(measured, state, error, items)


@dataclass
class Baselines:
    """The peak of an ordinary import of FOLDER per route, in this environment: measured
    once per route and module, right where the hostile imports run."""

    tmp: pytest.TempPathFactory
    peaks: dict[str, int]

    def __call__(self, route_name: str) -> int:
        if route_name not in self.peaks:
            with serve_route(route_name, FOLDER) as route:
                ordinary = import_measured(route, self.tmp.mktemp("baseline") / "data")
            assert ordinary.state == "succeeded", ordinary.measured.stderr
            self.peaks[route_name] = ordinary.measured.peak_rss_bytes
        return self.peaks[route_name]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baselines:
    return Baselines(tmp_path_factory, {})


def assert_bounded(outcome: Outcome, ordinary: int) -> None:
    peak = outcome.measured.peak_rss_bytes
    assert peak < ordinary + MARGIN, (
        f"peak {peak / MiB:.0f} MiB, an ordinary import {ordinary / MiB:.0f} MiB, "
        f"allowed {(ordinary + MARGIN) / MiB:.0f} MiB"
    )
    assert "Traceback" not in outcome.measured.stderr, outcome.measured.stderr[-3000:]


# -- memory: compressed bodies -------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("route_name", "layers"),
    [("gdrive-public", 2), ("gdrive-public", 3), ("gdrive-api", 2), ("dropbox-api", 2)],
)
def test_a_file_compressed_in_layers_is_refused_in_bounded_memory(
    route_name: str, layers: int, tmp_path: Path, baseline: Baselines
) -> None:
    ordinary = baseline(route_name)
    body = gzip_bomb(BOMB_BYTES, layers)
    assert len(body) < 4096
    with serve_route(route_name, FOLDER) as route:
        answer_file(route, BOMB, body, ", ".join(["gzip"] * layers))
        outcome = import_measured(route, tmp_path / "data")

    assert_bounded(outcome, ordinary)
    assert outcome.state == "completed_with_failures", outcome.error
    state, reason, attempts = outcome.items[BOMB.name]
    assert state == "failed"
    assert "compressed" in (reason or "") and "refused" in (reason or ""), reason
    assert attempts == 0  # refused at once, never retried
    assert {name: s for name, (s, _, _) in outcome.items.items() if name != BOMB.name} == {
        picture.name: "done" for picture in PICTURES
    }


@pytest.mark.timeout(300)
def test_one_layer_of_gzip_is_inflated_a_chunk_at_a_time_up_to_the_size_limit(
    tmp_path: Path, baseline: Baselines
) -> None:
    """One layer is accepted (servers may compress), but inflated at most CHUNK_SIZE bytes at
    a time, so MAX_FILE_SIZE_BYTES stops it before more than a chunk of it exists."""
    ordinary = baseline("gdrive-public")
    with serve_route("gdrive-public", FOLDER) as route:
        answer_file(route, BOMB, gzip_bomb(BOMB_BYTES, 1, head=BOMB.content), "gzip")
        outcome = import_measured(route, tmp_path / "data")

    assert_bounded(outcome, ordinary)
    state, reason, _ = outcome.items[BOMB.name]
    assert state == "failed"
    assert "File too large" in (reason or ""), reason


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("route_name", "expected"),
    [
        # The folder page of the key-less Drive route.
        ("gdrive-public", "the answer is compressed in 2 layers"),
        # The whole folder as one archive (httpx, streamed to a temporary file).
        ("dropbox-zip", "the answer is compressed in 2 layers"),
        # A JSON answer of the Dropbox SDK: requests reads it whole, urllib3 inflates it.
        ("dropbox-api", "Dropbox answered with a compressed body"),
        # googleapiclient's httplib2 inflates one layer whole, up to 100x past 10 MiB.
        ("gdrive-api", "the answer is compressed (Content-Encoding: gzip)"),
    ],
)
def test_a_compressed_listing_is_refused_in_bounded_memory(
    route_name: str, expected: str, tmp_path: Path, baseline: Baselines
) -> None:
    ordinary = baseline(route_name)
    if route_name == "gdrive-api":
        # httplib2 only decodes a single coding; this one would pass its ratio check.
        body, encoding = gzip_at_ratio_below_100(BOMB_BYTES), "gzip"
    else:
        body, encoding = gzip_bomb(BOMB_BYTES, 2), "gzip, gzip"
    content_type = {"gdrive-public": "text/html", "dropbox-zip": "application/zip"}
    with serve_route(route_name, FOLDER) as route:
        route.tap.answer(
            LISTING_TARGET[route_name],
            200,
            body,
            content_encoding=encoding,
            content_type=content_type.get(route_name, "application/json"),
        )
        outcome = import_measured(route, tmp_path / "data")

    assert_bounded(outcome, ordinary)
    assert outcome.state == "failed"
    assert expected in (outcome.error or ""), outcome.error
    assert "refused" in (outcome.error or "")
    assert outcome.items == {}


@pytest.mark.timeout(300)
def test_the_body_of_a_redirect_is_never_read(tmp_path: Path, baseline: Baselines) -> None:
    """Only a redirect's Location matters; httpx reads a followed redirect's body whole."""
    ordinary = baseline("gdrive-public")
    with serve_route("gdrive-public", FOLDER) as route:
        # Redirected to the same download with its parameters in another order (so this
        # rule matches once), after 256 MiB of body nobody needs.
        route.tap.answer(
            file_target(route, BOMB),
            302,
            bytes(MiB),
            repeat=256,
            location=f"/download?export=download&confirm=t&id={BOMB.id}",
        )
        outcome = import_measured(route, tmp_path / "data")

    assert_bounded(outcome, ordinary)
    assert outcome.state == "succeeded", outcome.items


# -- protocol errors -----------------------------------------------------------------------


def unexpected_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Our own log lines that carry a traceback (the mark of an "unexpected" error)."""
    return [
        caplog.text
        for record in caplog.records
        if record.name.startswith("imageimport") and (record.exc_info or record.exc_text)
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-api", "gdrive-public", "dropbox-api"])
def test_a_redirect_loop_fails_the_file_at_once(
    route_name: str, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serve_route(route_name, FOLDER) as route:
        route.tap.redirect(file_target(route, BOMB), "/loop")
        route.tap.redirect(r"^/loop", "/loop")
        settings = make_settings(max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            items = {item.name: item for item in items_by_path(runtime, result.import_id).values()}
        loops = sum(1 for target in route.tap.seen if target.startswith("/loop"))

    looped = items[BOMB.name]
    assert looped.state == "failed"
    assert "redirect loop" in (looped.reason or ""), looped.reason
    assert looped.attempts == 0  # one attempt, never retried
    assert loops <= MAX_REDIRECTS  # the redirects of that one attempt, no more
    assert {item.name: item.state for item in items.values()} == {
        p.name: "done" for p in PICTURES
    } | {BOMB.name: "failed"}
    assert not unexpected_logs(caplog)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route_name", ["gdrive-public", "dropbox-api", "dropbox-zip"])
def test_a_redirect_loop_fails_the_listing_at_once(
    route_name: str, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = {
        "gdrive-public": LISTING_TARGET["gdrive-public"],
        "dropbox-api": LISTING_TARGET["dropbox-api"],
        "dropbox-zip": r"dl=1",  # the shared link itself
    }[route_name]
    with serve_route(route_name, FOLDER) as route:
        route.tap.redirect(first, "/loop")
        route.tap.redirect(r"^/loop", "/loop")
        with imported(make_settings(**route.settings), route.url) as (_, result):
            pass
        loops = sum(1 for target in route.tap.seen if target.startswith("/loop"))

    assert result.state == "failed"
    assert "redirect loop" in (result.error or ""), result.error
    assert "Internal error" not in (result.error or "")
    assert loops <= MAX_REDIRECTS  # listed once: not retried by the listing's own retries
    assert not unexpected_logs(caplog)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        pytest.param(
            200,
            b"\x1f\x8b\x08\x00" + bytes(range(256)) * 64,
            {"content_encoding": "gzip"},
            "compressed body is garbled",
            id="garbled-gzip",
        ),
        pytest.param(
            200,
            gzip.compress(make_image(40, 30, "JPEG", seed=599))[:-64],
            {"content_encoding": "gzip"},
            "stops before its end",
            id="truncated-gzip",
        ),
        pytest.param(
            200,
            b"\x0b\x02\x80hello\x03",
            {"content_encoding": "br"},
            "is encoded as 'br', which is not accepted",
            id="unknown-coding",
        ),
        pytest.param(302, b"", {"location": "http://[x]/"}, "invalid address", id="bad-location"),
        pytest.param(
            302, b"", {"location": "javascript:alert(1)"}, "invalid address", id="hostless-location"
        ),
    ],
)
def test_an_unusable_answer_fails_the_file_at_once_with_a_reason(
    status: int,
    body: bytes,
    headers: dict[str, str],
    expected: str,
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with serve_route("gdrive-public", FOLDER) as route:
        route.tap.answer(
            file_target(route, BOMB),
            status,
            body,
            content_type="image/jpeg",
            content_disposition='attachment; filename="bomb.jpg"',
            **headers,
        )
        settings = make_settings(max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            items = {item.name: item for item in items_by_path(runtime, result.import_id).values()}
        tries = sum(1 for target in route.tap.seen if target.startswith("/download"))

    broken = items[BOMB.name]
    assert broken.state == "failed"
    assert expected in (broken.reason or ""), broken.reason
    assert broken.reason.startswith("Downloading 'bomb.jpg' from Google Drive: ")
    assert broken.attempts == 0
    assert tries == 1 + len(PICTURES)  # one request for it, one for each other file
    assert not unexpected_logs(caplog)


@pytest.mark.timeout(120)
def test_a_dropbox_redirect_to_another_scheme_fails_the_file_at_once(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """requests finds no adapter for ftp:, before any host guard could refuse it."""
    caplog.set_level(logging.INFO)
    with serve_route("dropbox-api", FOLDER) as route:
        route.tap.redirect(file_target(route, BOMB), "ftp://127.0.0.1/bomb.jpg")
        settings = make_settings(max_deliver=3, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            items = {item.name: item for item in items_by_path(runtime, result.import_id).values()}

    redirected = items[BOMB.name]
    assert redirected.state == "failed"
    assert "neither http nor https" in (redirected.reason or ""), redirected.reason
    assert redirected.attempts == 0
    assert not unexpected_logs(caplog)
