"""The `imageimport` command as users run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageimport import db
from imageimport.cli import app
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.registry import parse_folder_url
from tests.commands import run_imageimport
from tests.fakes.folder import FakeFile, FakeFolder, lean_folder, make_image, sample_folder
from tests.pipeline.routes import ROUTES, Route, start_route

SAMPLE, EXPECTED = sample_folder()
runner = CliRunner()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no `.env`) and no imageimport variables from the shell."""
    from imageimport.settings import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=ROUTES)
def route(
    request: pytest.FixtureRequest, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Route]:
    with start_route(request.param, SAMPLE) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MAX_FILE_SIZE_BYTES", str(EXPECTED.oversized_bytes))
        monkeypatch.setenv("SOURCE_RETRY_MAX_WAIT_SECONDS", "0.5")
        yield running


def test_import_prints_a_summary_and_images_lists_them_as_json(route: Route) -> None:
    result = runner.invoke(app, ["import", route.url, "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    assert "completed_with_failures" in result.output
    assert "huge.jpg: File too large" in result.output
    assert "broken.jpg: Corrupt or truncated image" in result.output

    listed = runner.invoke(app, ["images", "--json"])
    assert listed.exit_code == 0, listed.output
    images = json.loads(listed.stdout)
    assert len(images) == len(EXPECTED.images)
    for image in images:
        assert set(image) >= {
            "id",
            "name",
            "path",
            "sha256",
            "size",
            "width",
            "height",
            "format",
            "source_file_id",
            "object_key",
        }
        assert (Path("data/objects") / image["object_key"]).stat().st_size == image["size"]
    deep = next(i for i in images if i["path"] == "sub/deeper/deep.jpg")
    assert (deep["width"], deep["height"], deep["format"]) == (800, 600, "JPEG")

    again = runner.invoke(app, ["import", route.url])
    assert again.exit_code == 0, again.output
    assert len(json.loads(runner.invoke(app, ["images", "--json"]).stdout)) == len(images)


def test_importing_a_folder_again_shows_its_files_unchanged(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FakeFolder(
        "again", [FakeFile(f"{n}.png", make_image(20 + n, 20, "PNG", seed=330 + n)) for n in (1, 2)]
    )
    with start_route("gdrive-api", folder) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        first = runner.invoke(app, ["import", running.url])
        assert first.exit_code == 0, first.output
        again = runner.invoke(app, ["import", running.url])
    # Nothing new, nothing downloaded, and still a success: the images are there.
    assert again.exit_code == 0, again.output
    assert re.search(r"unchanged \(not downloaded\)\s*│\s*2\s*│", again.output), again.output
    assert re.search(r"│ imported\s*│\s*0\s*│", again.output), again.output
    assert re.search(r"bytes downloaded\s*│\s*0\s*│", again.output), again.output


def test_sync_lists_the_folder_again_into_the_import_and_prints_the_round(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FakeFolder(
        "synced",
        [FakeFile(f"{n}.png", make_image(20 + n, 20, "PNG", seed=340 + n)) for n in (1, 2, 3)],
    )
    files = dict(folder.files())
    with start_route("gdrive-api", folder) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        first = runner.invoke(app, ["import", running.url])
        assert first.exit_code == 0, first.output
        found = re.search(r"│ import\s*│ ([0-9a-f-]{36}) │", first.output)
        assert found is not None, first.output
        import_id = found[1]
        drive = running.server.app.app.state.drive  # type: ignore[attr-defined]
        files["1.png"].overwrite(make_image(30, 20, "PNG", seed=344))
        drive.add(folder, FakeFile("4.png", make_image(24, 20, "PNG", seed=345)))
        drive.remove(files["3.png"])

        synced = runner.invoke(app, ["sync", import_id, "--prune"])
        assert synced.exit_code == 0, synced.output
        assert "Sync round 1: 1 added, 1 changed, 1 unchanged, 1 gone, 1 images pruned." in (
            synced.output
        )
        assert re.search(r"│ import\s*│ " + import_id, synced.output), synced.output
        assert re.search(r"│ imported\s*│\s*3\s*│", synced.output), synced.output

        unknown = runner.invoke(app, ["sync", "00000000-0000-4000-8000-000000000000"])
        assert unknown.exit_code == 2
        assert "Import 00000000-0000-4000-8000-000000000000 does not exist." in unknown.output
        detached = runner.invoke(app, ["sync", import_id, "--detach"])
        assert detached.exit_code == 2 and "--detach needs NATS_URL" in detached.output


def test_import_mode_comes_from_the_command_line_over_the_setting(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean = lean_folder("cli lean")
    full = FakeFolder("cli full", [FakeFile("x.png", make_image(20, 20, "PNG", seed=341))])
    with start_route("gdrive-api", FakeFolder("cli modes", [lean.folder, full])) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("IMPORT_MODE", "lean")
        by_setting = runner.invoke(app, ["import", _folder_link(lean.folder)])
        assert by_setting.exit_code == 0, by_setting.output
        by_option = runner.invoke(app, ["import", _folder_link(full), "--mode", "full"])
        assert by_option.exit_code == 0, by_option.output
    images = {i["path"]: i for i in json.loads(runner.invoke(app, ["images", "--json"]).stdout)}
    assert {path: image["state"] for path, image in images.items()} == {
        **{path: "unverified" for path in lean.good | lean.corrupt},
        "x.png": "ready",
    }
    # Lean: the originals only, the thumbnails made later.
    for image in images.values():
        assert (Path("data/objects") / image["object_key"]).exists()
        assert (Path("data/objects") / image["thumbnail_key"]).exists() == (
            image["path"] == "x.png"
        )


def _folder_link(folder: FakeFolder) -> str:
    return f"https://drive.google.com/drive/folders/{folder.id}?usp=sharing"


def test_exit_code_is_nonzero_when_nothing_could_be_imported(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FakeFolder("no pictures", [FakeFile("a.txt", b"hello"), FakeFile("b.csv", b"1,2")])
    with start_route("gdrive-api", folder) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(app, ["import", running.url])
    assert result.exit_code == 1
    assert "skipped (not images)" in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/photos", "is not a Google Drive folder link"),
        ("https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view", "single file"),
        ("https://www.dropbox.com/scl/fi/abc123/photo.jpg?rlkey=x", "not a folder"),
        ("", "empty"),
    ],
)
def test_bad_urls_get_a_clear_error_and_no_traceback(
    clean_env: Path, url: str, message: str
) -> None:
    result = runner.invoke(app, ["import", url])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (clean_env / "data").exists()  # nothing recorded for a bad link


def test_missing_folder_is_reported_not_crashed(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = FakeFolder("secret", [FakeFile("x.png", make_image(4, 4, "PNG"))], public=False)
    with start_route("gdrive-api", private) as running:
        for key, value in running.env.items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(app, ["import", running.url])
    assert result.exit_code == 1
    assert "not shared" in result.output or "not found" in result.output
    assert "Traceback" not in result.output


def test_invalid_configuration_names_the_setting(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCURRENCY", "zero")
    result = runner.invoke(app, ["images"])
    assert result.exit_code == 2
    assert "CONCURRENCY" in result.output


def test_console_script_runs(clean_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = run_imageimport("images", "--json", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_images_json_lists_every_image_however_many(clean_env: Path) -> None:
    # More than the table shows (1,000) and than one page of the database holds.
    count = 1_234
    runtime = Runtime(Settings(), housekeeping=False)
    try:
        with runtime.session() as session:
            import_id = db.create_import(session, parse_folder_url(DRIVE_FOLDER)).id
            files = [RemoteFile(id=f"f{n}", name=f"{n}.png", path=f"{n}.png") for n in range(count)]
            items = db.add_items(session, import_id, files)
            for n, item in enumerate(items):
                image_id, _ = db.insert_image(session, _new_image(n, import_id))
                db.finish_item(session, item.id, "done", image_id=image_id, nbytes=1)
    finally:
        runtime.close()

    for command in (["images", "--json"], ["images", "--json", "--import", import_id]):
        listed = runner.invoke(app, command)
        assert listed.exit_code == 0, listed.output
        ids = [image["id"] for image in json.loads(listed.stdout)]
        assert len(ids) == count
        assert ids == sorted(set(ids))
    limited = runner.invoke(app, ["images", "--json", "--limit", "1001"])
    assert len(json.loads(limited.stdout)) == 1001
    # The table shows the first thousand, and says there is more.
    table = runner.invoke(app, ["images"])
    assert table.exit_code == 0, table.output
    assert "--json lists them all" in table.stderr


def _new_image(n: int, import_id: str) -> db.NewImage:
    return db.NewImage(
        sha256=f"{n:064x}",
        object_key=f"images/{n:064x}.png",
        thumbnail_key=f"thumbnails/{n:064x}.webp",
        size=1,
        content_type="image/png",
        width=1,
        height=1,
        format="PNG",
        taken_at=None,
        camera=None,
        name=f"{n}.png",
        path=f"{n}.png",
        provider="gdrive",
        source_file_id=f"f{n}",
        import_id=import_id,
    )


# -- an unreachable NATS ----------------------------------------------------------------------

DRIVE_FOLDER = "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
CLOSED_NATS = "nats://imageimport:nats-secret-9931@127.0.0.1:1"  # nothing listens on port 1


def _run_against_closed_nats(
    cwd: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    from imageimport.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    base = {k: v for k, v in os.environ.items() if k not in names}
    started = time.monotonic()
    done = run_imageimport(*args, env=base | {"NATS_URL": CLOSED_NATS} | env, cwd=cwd)
    return done, time.monotonic() - started


def _assert_one_clear_line(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert done.stderr.strip().splitlines() == [
        "Error: Cannot connect to NATS at nats://***@127.0.0.1:1 within 1 seconds "
        "(connection refused); check NATS_URL and that the NATS server is running and "
        "reachable from here."
    ]
    assert "nats-secret-9931" not in output


def test_queue_setup_against_a_closed_port_fails_within_the_default_deadline(
    clean_env: Path,
) -> None:
    done, elapsed = _run_against_closed_nats(clean_env, "queue-setup")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: Cannot connect to NATS at nats://***@127.0.0.1:1 within 10 ")
    assert "NATS_URL" in line
    assert "nats-secret-9931" not in line
    assert elapsed < 20  # NATS_CONNECT_TIMEOUT_SECONDS=10 by default, not 40 s or forever


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["queue-setup"], id="queue-setup"),
        pytest.param(["import", DRIVE_FOLDER, "--detach"], id="import-detach"),
        pytest.param(["import", DRIVE_FOLDER], id="import-distributed"),
        pytest.param(["api", "--port", "1"], id="api"),
        pytest.param(["serve", "--port", "1"], id="serve"),
    ],
)
def test_commands_against_a_closed_nats_port_end_with_one_clear_line(
    clean_env: Path, args: list[str]
) -> None:
    done, elapsed = _run_against_closed_nats(clean_env, *args, NATS_CONNECT_TIMEOUT_SECONDS="1")
    _assert_one_clear_line(done)
    assert elapsed < 10
