"""Hostile archives on the Dropbox ZIP route (no credentials: the folder arrives as one ZIP),
through the whole pipeline: bombs, zip-slip names, nested archives, thousands of entries."""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from imageimport.db.models import Import, ImportItem
from imageimport.pipeline.pool import WorkerPool
from imageimport.queue.memory import MemoryQueue
from imageimport.runtime import Runtime
from imageimport.services.imports import Importer
from imageimport.tempfiles import DROPBOX_ZIPS, owner_id
from tests.fakes.dropbox import make_dropbox_app, shared_link
from tests.fakes.folder import FakeFile, FakeFolder
from tests.fakes.server import RunningServer
from tests.security.conftest import (
    DROPBOX_KEY,
    DROPBOX_REFRESH,
    DROPBOX_SECRET,
    SettingsFactory,
    assert_contained,
    images,
    imported,
    items_by_path,
    serve_route,
)
from tests.security.hostile import MiB, image, png_chunk

# The fake serves the archive given here instead of zipping the folder.
FOLDER = FakeFolder("Archive", [FakeFile("placeholder.txt", b"x")])
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bytes.fromhex("0000001000000010080200000000"))


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()


def _bomb_entry(archive: zipfile.ZipFile, name: str, size: int) -> None:
    """`size` bytes that start like a PNG, then zeros: ~1000:1 once deflated, and past the
    sniffing, so only the ratio check stops it being unpacked whole."""
    info = zipfile.ZipInfo(name, (2024, 5, 1, 12, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as out:
        out.write(PNG_HEAD)
        block = bytes(MiB)
        for _ in range(size // MiB):
            out.write(block)


def _leftover_archives() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("imageimport-dropbox-*.zip")}


@pytest.mark.timeout(120)
def test_bombs_slips_and_nested_archives_fail_alone(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    nested = _zip([("inner/photo.jpg", image(1)), ("inner/../../escape.jpg", image(2))])
    slips = {
        "Archive/../../../../tmp/slip-up.jpg": image(10),
        "/etc/absolute.png": image(11, "PNG"),
        "Archive/..\\..\\windows.jpg": image(12),
        "C:\\Windows\\drive-letter.jpg": image(13),
        "Archive/a/./b/../../../dots.jpg": image(14),
        "Archive/ctrl\x1b[2J\x07.jpg": image(15),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Archive/good.jpg", image(0))
        archive.writestr("Archive/nested.zip", nested)
        archive.writestr("Archive/nested-named.jpg", nested)  # an archive in disguise
        for name, data in slips.items():
            archive.writestr(name, data)
        _bomb_entry(archive, "Archive/bomb.png", 64 * MiB)
    before = _leftover_archives()
    with serve_route("dropbox-zip", FOLDER, raw_zips={FOLDER.id: out.getvalue()}) as route:
        settings = make_settings(**route.settings)
        started = time.monotonic()
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "completed_with_failures", result.error
            items = items_by_path(runtime, result.import_id)
            by_name = {item.name: item for item in items.values()}
            bomb = by_name["bomb.png"]
            assert bomb.state == "failed"
            assert "zip bomb" in (bomb.reason or ""), bomb.reason
            assert bomb.bytes is None  # refused before a byte was unpacked
            for name in ("nested.zip", "nested-named.jpg"):
                assert by_name[name].state == "skipped", by_name[name].reason
                assert (by_name[name].reason or "").startswith("Not an image")
            done = {item.path for item in items.values() if item.state == "done"}
            # Every slip lands inside the folder, under a clean relative path.
            assert len(done) == 1 + len(slips)
            for path in done:
                assert not path.startswith(("/", "\\")) and ".." not in path.split("/"), path
                assert "\\" not in path, path
                assert not any(ord(ch) < 0x20 for ch in path), path
            assert len(images(runtime)) == len(done)
            assert_contained(runtime, settings.data_dir)
        assert time.monotonic() - started < 30
    # Nothing was unpacked anywhere else: no slip-up file, and the archive itself is gone.
    assert not (Path(tempfile.gettempdir()) / "slip-up.jpg").exists()
    assert not list(tmp_path.rglob("slip-up.jpg")) and not list(tmp_path.rglob("escape.jpg"))
    assert _leftover_archives() <= before


def test_an_archive_unpacking_beyond_the_total_limit_fails_the_import(
    make_settings: SettingsFactory,
) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Archive/good.jpg", image(0))
        _bomb_entry(archive, "Archive/a.png", 3 * MiB)
        _bomb_entry(archive, "Archive/b.png", 3 * MiB)
    raw = out.getvalue()
    assert len(raw) < MiB // 4
    with serve_route("dropbox-zip", FOLDER, raw_zips={FOLDER.id: raw}) as route:
        settings = make_settings(zip_max_total_bytes=4 * MiB, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert "ZIP_MAX_TOTAL_BYTES" in (result.error or ""), result.error
            assert "would unpack to" in (result.error or "")
            assert images(runtime) == []


def test_a_download_beyond_the_total_limit_is_cut_at_the_limit(
    make_settings: SettingsFactory,
) -> None:
    limit = 2 * MiB
    block = b"\0" * (64 * 1024)
    chunks = [b"PK\x03\x04" + block[4:]] + [block] * (40 * MiB // len(block))  # no length sent
    with serve_route("dropbox-zip", FOLDER, raw_zips={FOLDER.id: chunks}) as route:
        settings = make_settings(zip_max_total_bytes=limit, **route.settings)
        with imported(settings, route.url) as (_, result):
            assert result.state == "failed"
            assert "ZIP_MAX_TOTAL_BYTES" in (result.error or ""), result.error
        sent = route.tap.sent_for("/zip_download_get/")
    # Cut once past the limit, give or take what the sockets buffer; never to the end.
    assert limit < sent < limit + 12 * MiB, sent


def test_too_many_entries_are_refused_before_any_is_read(make_settings: SettingsFactory) -> None:
    raw = _zip([(f"Archive/{n:05d}.txt", b"") for n in range(3000)])
    with serve_route("dropbox-zip", FOLDER, raw_zips={FOLDER.id: raw}) as route:
        settings = make_settings(zip_max_entries=2000, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "failed"
            assert "3000 entries" in (result.error or "") and "ZIP_MAX_ENTRIES" in (
                result.error or ""
            )
            assert items_by_path(runtime, result.import_id) == {}


@pytest.mark.timeout(120)
def test_thousands_of_tiny_entries_all_settle(make_settings: SettingsFactory) -> None:
    tiny = [(f"Archive/t/{n:05d}.jpg", b"%d" % n) for n in range(1500)]
    pictures = [(f"Archive/p/{n}.png", image(200 + n, "PNG")) for n in range(10)]
    raw = _zip(tiny + pictures)
    with serve_route("dropbox-zip", FOLDER, raw_zips={FOLDER.id: raw}) as route:
        settings = make_settings(concurrency=8, **route.settings)
        with imported(settings, route.url) as (runtime, result):
            assert result.state == "succeeded", result.error
            c = result.counters
            assert (c.discovered, c.skipped, c.imported) == (1510, 1500, 10)
            assert_contained(runtime, settings.data_dir)


def _archives_on_disk() -> int:
    """The Dropbox ZIPs this process has downloaded and not yet let go of."""
    mine = f"{DROPBOX_ZIPS.prefix}{owner_id()}-*{DROPBOX_ZIPS.suffix}"
    return len(list(DROPBOX_ZIPS.where().glob(mine)))


@pytest.mark.timeout(300)
def test_a_process_keeps_at_most_its_places_of_archives_open(
    make_settings: SettingsFactory,
) -> None:
    """Three ZIP imports at once in one process, as `serve` runs them. An open archive holds
    its index in memory and its file (up to ZIP_MAX_TOTAL_BYTES) on disk, and every import's
    stayed open until the import finished, however many there were (main: all three at
    once). Now at most ZIP_MAX_OPEN_ARCHIVES (here 1) are: the other imports wait for a place,
    then finish, and no file takes more than one attempt."""
    folders = [
        FakeFolder(f"Album {n}", [FakeFile(f"{k}.jpg", image(20 * n + k)) for k in range(12)])
        for n in range(3)
    ]
    app = make_dropbox_app(folders, DROPBOX_KEY, DROPBOX_SECRET, DROPBOX_REFRESH)
    assert _archives_on_disk() == 0
    with RunningServer(app) as server:
        urls = dict.fromkeys(("dropbox_api_url", "dropbox_content_url", "dropbox_web_url"))
        settings = make_settings(
            **{name: server.url for name in urls}, zip_max_open_archives=1, concurrency=4
        )
        runtime = Runtime(settings)
        queue = MemoryQueue()
        importer = Importer(runtime, queue)
        pool = WorkerPool(runtime, queue, settings.concurrency)
        pool.start()
        most = 0
        try:
            ids = [importer.start(shared_link("www.dropbox.com", folder)) for folder in folders]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                most = max(most, _archives_on_disk())
                with runtime.session() as session:
                    states = [session.get(Import, i).state for i in ids]  # type: ignore[union-attr]
                if all(state == "succeeded" for state in states):
                    break
                time.sleep(0.01)
            with runtime.session() as session:
                items = list(session.scalars(select(ImportItem)))
        finally:
            pool.stop()
            runtime.close()
    assert states == ["succeeded"] * 3
    assert most == 1
    assert len(items) == 36 and {item.state for item in items} == {"done"}
    assert {item.attempts for item in items} == {0}
    assert _archives_on_disk() == 0
