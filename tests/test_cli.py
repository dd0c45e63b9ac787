"""The `imageimport` command as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageimport.cli import app
from tests.fakes.folder import FakeFile, FakeFolder, make_image, sample_folder
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
    done = subprocess.run(
        [sys.executable, "-m", "imageimport", "images", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
