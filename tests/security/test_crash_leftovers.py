"""kill -9 in the middle of an embedded import: what it leaves (partial objects in the store, the
Dropbox ZIP download in the temporary directory, S3 multipart uploads) is cleaned up, and the
import is finished by `imageimport resume`, or by importing the same folder again, with every
image stored exactly once. Temporary files of processes that are still alive are never touched.

Every process here is a real `python -m imageimport`. Kills land mid-import because the test
waits until the database shows files done (and the folder has many more), not on a timer."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError

from imageimport.db.models import Image, Import, ImportItem
from imageimport.settings import Settings
from tests.commands import run_imageimport
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image
from tests.pipeline.routes import Route, start_route
from tests.servers import unique_bucket_name

_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"IMAGEIMPORT_MODE"}


def _env(route: Route, data_dir: Path, temp_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    temp_dir.mkdir(exist_ok=True)
    return (
        env
        | route.env
        | extra
        | {
            "DATA_DIR": str(data_dir),
            "TMPDIR": str(temp_dir),  # where the Dropbox ZIP route downloads to
            "SOURCE_RETRY_MAX_WAIT_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )


@contextmanager
def _running(*args: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageimport", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait()


class Database:
    """The SQLite file of one DATA_DIR, read the way a user's shell could."""

    def __init__(self, data_dir: Path) -> None:
        self.engine = create_engine(f"sqlite:///{data_dir / 'imageimport.db'}")

    def counts(self) -> tuple[str | None, dict[str, int]]:
        """The only import's id and its items per state (None before it exists)."""
        try:
            with self.engine.connect() as connection:
                import_id = connection.scalar(select(Import.id))
                rows = connection.execute(
                    select(ImportItem.state, func.count()).group_by(ImportItem.state)
                ).all()
        except OperationalError:
            return None, {}  # the command has not created the tables yet
        return import_id, {state: count for state, count in rows}

    def wait_for_done(self, process: subprocess.Popen[bytes], at_least: int, log: Path) -> str:
        deadline = time.monotonic() + 120
        while True:
            import_id, counts = self.counts()
            if import_id is not None and counts.get("done", 0) >= at_least:
                return import_id
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)

    def imports(self) -> list[tuple[str, str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(Import.id, Import.state)).all()
        return [(str(import_id), str(state)) for import_id, state in rows]

    def assert_each_file_stored_once(self, import_id: str, files: int, objects: Path) -> None:
        """Succeeded, with exact counters: one image row, one original and one thumbnail per
        listed file, and nothing else in the store."""
        with self.engine.connect() as connection:
            state = connection.scalar(select(Import.state).where(Import.id == import_id))
            items = connection.execute(
                select(ImportItem.state, ImportItem.image_id).where(
                    ImportItem.import_id == import_id
                )
            ).all()
            images = connection.execute(
                select(Image.sha256, Image.object_key, Image.thumbnail_key)
            ).all()
        assert state == "succeeded"
        assert len(items) == files
        assert {item_state for item_state, _ in items} == {"done"}
        assert len({image_id for _, image_id in items}) == files
        assert len(images) == len({sha for sha, _, _ in images}) == files
        stored = sorted(
            p.relative_to(objects).as_posix() for p in objects.rglob("*") if p.is_file()
        )
        assert stored == sorted(key for _, *keys in images for key in keys)

    def close(self) -> None:
        self.engine.dispose()


def _leftovers(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.rglob(f"{prefix}*"))


def _plant_dead_writer(directory: Path, prefix: str, suffix: str) -> Path:
    """What a process killed mid-write leaves: its owner lock file (no process holds it any
    more) and a partial file named after it."""
    owner = secrets.token_hex(8)
    (directory / f"{prefix}{owner}.lock").touch()
    partial = directory / f"{prefix}{owner}-k1ll3d{suffix}"
    partial.write_bytes(b"\xff\xd8\xff partial" * 1000)
    return partial


def _summary_line(output: str, label: str) -> str:
    lines = [line for line in output.splitlines() if label in line]
    assert lines, output
    return " ".join(lines[0].replace("│", " ").split())


# -- a Google Drive import killed mid-way --------------------------------------------------

DRIVE_FILES = 120


@pytest.fixture
def killed_drive_import(tmp_path: Path) -> Iterator[tuple[Route, dict[str, str], Database, str]]:
    """A Drive import (120 files, each download 50 ms) killed with SIGKILL after 20 are done."""
    folder = big_folder(DRIVE_FILES, seed=41, name="killed mid-import")
    with start_route("gdrive-api", folder) as route:
        route.faults.latency = 0.05
        env = _env(route, tmp_path / "data", tmp_path / "tmp")
        database = Database(tmp_path / "data")
        log = tmp_path / "import.log"
        with _running("import", route.url, "--concurrency", "2", env=env, log=log) as process:
            import_id = database.wait_for_done(process, at_least=20, log=log)
            process.kill()
            process.wait()
        _, counts = database.counts()
        assert counts.get("pending", 0) > 0, counts  # the kill landed mid-import
        ((_, state),) = database.imports()
        assert state in ("listing", "importing")
        try:
            yield route, env, database, import_id
        finally:
            database.close()


@pytest.mark.timeout(300)
def test_resume_finishes_an_import_killed_mid_way(
    killed_drive_import: tuple[Route, dict[str, str], Database, str], tmp_path: Path
) -> None:
    _, env, database, import_id = killed_drive_import
    objects = tmp_path / "data" / "objects"
    partial = _plant_dead_writer(objects, ".tmp-", ".part")

    done = run_imageimport("resume", env=env, cwd=tmp_path, timeout=240)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _summary_line(done.stderr, "imported") == f"imported {DRIVE_FILES}"
    assert _summary_line(done.stderr, "state") == "state succeeded"
    assert database.imports() == [(import_id, "succeeded")]
    database.assert_each_file_stored_once(import_id, DRIVE_FILES, objects)
    assert not partial.exists()
    assert _leftovers(objects, ".tmp-") == []


@pytest.mark.timeout(300)
def test_importing_the_folder_again_finishes_the_interrupted_import(
    killed_drive_import: tuple[Route, dict[str, str], Database, str], tmp_path: Path
) -> None:
    route, env, database, import_id = killed_drive_import
    objects = tmp_path / "data" / "objects"

    done = run_imageimport("import", route.url, env=env, cwd=tmp_path, timeout=240)

    assert done.returncode == 0, done.stderr
    assert f"Carrying on with import {import_id}" in done.stderr
    assert _summary_line(done.stderr, "imported") == f"imported {DRIVE_FILES}"
    # The same import, finished: not a second one that leaves the first `importing` forever.
    assert database.imports() == [(import_id, "succeeded")]
    database.assert_each_file_stored_once(import_id, DRIVE_FILES, objects)
    assert _leftovers(objects, ".tmp-") == []


# -- Dropbox ZIP downloads of dead and of live processes -----------------------------------

ZIP_FILES = 150


def _zip_folder() -> FakeFolder:
    # Big enough that decoding and thumbnailing take a while in the ZIP route, where files are
    # read from the local download rather than fetched one by one.
    files: list[FakeFile | FakeFolder] = [
        FakeFile(f"photo-{n:03d}.jpg", make_image(900, 700, "JPEG", seed=700 + n), "image/jpeg")
        for n in range(ZIP_FILES)
    ]
    return FakeFolder("zipped", files)


@pytest.mark.timeout(420)
def test_a_dead_processes_zip_download_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    temp_dir = tmp_path / "tmp"
    with start_route("dropbox-zip", _zip_folder()) as route:
        killed_env = _env(route, tmp_path / "killed", temp_dir)
        live_env = _env(route, tmp_path / "live", temp_dir)
        killed_db, live_db = Database(tmp_path / "killed"), Database(tmp_path / "live")
        try:
            # One import killed while it works through its ZIP download...
            log = tmp_path / "killed.log"
            with _running("import", route.url, "-c", "1", env=killed_env, log=log) as killed:
                import_id = killed_db.wait_for_done(killed, at_least=10, log=log)
                killed.kill()
                killed.wait()
            dead_zips = _leftovers(temp_dir, "imageimport-dropbox-")
            assert [name for name in dead_zips if name.endswith(".zip")], dead_zips

            # ...and one alive (stopped, so it is still mid-import whatever the timing) that
            # shares the temporary directory.
            log = tmp_path / "live.log"
            with _running("import", route.url, "-c", "1", env=live_env, log=log) as live:
                live_db.wait_for_done(live, at_least=5, log=log)
                live.send_signal(signal.SIGSTOP)
                live_zips = sorted(set(_leftovers(temp_dir, "imageimport-dropbox-")) - {*dead_zips})
                assert [name for name in live_zips if name.endswith(".zip")], live_zips

                done = run_imageimport("resume", env=killed_env, cwd=tmp_path, timeout=300)
                assert done.returncode == 0, done.stderr
                assert _summary_line(done.stderr, "imported") == f"imported {ZIP_FILES}"
                killed_db.assert_each_file_stored_once(
                    import_id, ZIP_FILES, tmp_path / "killed" / "objects"
                )
                # The dead process's download is gone, the live one's untouched.
                assert _leftovers(temp_dir, "imageimport-dropbox-") == live_zips

                live.send_signal(signal.SIGCONT)
                assert live.wait(240) == 0, log.read_text()[-3000:]
            ((live_id, live_state),) = live_db.imports()
            assert live_state == "succeeded"
            live_db.assert_each_file_stored_once(live_id, ZIP_FILES, tmp_path / "live" / "objects")
            assert _leftovers(temp_dir, "imageimport-dropbox-") == []
        finally:
            killed_db.close()
            live_db.close()


# -- S3 multipart uploads ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_stale_multipart_uploads_are_aborted_at_start_up(s3_server: Any, tmp_path: Path) -> None:
    """A worker killed mid multipart upload leaves the upload open: its parts stay stored, and
    billed, without ever showing in a listing. No process can say whose it is, so the next
    start aborts the ones older than TEMP_MAX_AGE_SECONDS under the store's prefix."""
    bucket = unique_bucket_name()
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)

    def upload(key: str) -> str:
        started = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
        return str(started["UploadId"])

    stale = upload("photos/images/ab/" + "ab" * 32 + ".jpg")
    not_ours = upload("another-app/big.bin")
    max_age = 10
    time.sleep(max_age + 1)
    fresh = upload("photos/images/cd/" + "cd" * 32 + ".jpg")  # a live worker's, just begun

    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES} | {
        "DATA_DIR": str(tmp_path / "data"),
        "S3_BUCKET": bucket,
        "S3_PREFIX": "photos",
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_ACCESS_KEY_ID": s3_server.access_key,
        "S3_SECRET_ACCESS_KEY": s3_server.secret_key,
        "TEMP_MAX_AGE_SECONDS": str(max_age),
    }
    done = run_imageimport("resume", env=env, cwd=tmp_path, timeout=60)

    assert done.returncode == 0, done.stderr
    open_uploads = {
        upload["UploadId"]
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
    }
    assert stale not in open_uploads
    assert {fresh, not_ours} <= open_uploads
    assert "No interrupted import to finish." in done.stderr
