"""The CLI prints names strangers chose (in progress logs, failure reasons, tables and JSON):
none of their control characters may reach the terminal."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from imageimport.settings import Settings
from tests.commands import run_imageimport
from tests.security.conftest import serve_route
from tests.security.hostile import HOSTILE_NAMES, MiB, hostile_folder

# Dropbox's answer for a file that vanished after the listing: its reason quotes the raw path.
VANISHED = (
    b'{"error_summary": "shared_link_not_found/..", "error": {".tag": "shared_link_not_found"}}'
)


def _unsafe(text: str) -> list[str]:
    """Characters a terminal may act on: C0 (but newline), DEL, C1, format and separators."""
    return sorted(
        {
            repr(ch)
            for ch in text
            if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        }
    )


@pytest.mark.timeout(120)
def test_cli_output_carries_no_control_characters(tmp_path: Path) -> None:
    folder, _ = hostile_folder("dropbox", oversized=8 * MiB)
    with serve_route("dropbox-api", folder) as route:
        route.tap.answer(r"bell\.jpg", 409, VANISHED, content_type="application/json")
        env = {
            k: v
            for k, v in os.environ.items()
            if k.upper() not in {n.upper() for n in Settings.model_fields}
            and k not in ("FORCE_COLOR", "CLICOLOR_FORCE")
        }
        env |= route.env | {
            "MAX_FILE_SIZE_BYTES": str(4 * MiB),
            "SOURCE_RETRY_MAX_WAIT_SECONDS": "0.2",
            "MAX_DELIVER": "2",
        }
        done = run_imageimport("-v", "import", route.url, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    # The names and reasons are there, made harmless.
    assert "bell.jpg was deleted or is no longer shared" in output
    assert "item " in done.stderr  # the -v progress log names every file
    assert _unsafe(output) == []

    table = run_imageimport("images", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert _unsafe(table.stdout + table.stderr) == []

    listed = run_imageimport("images", "--json", "--limit", "100", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert _unsafe(listed.stdout) == []
    # Escaped, not lost: the JSON still holds every name exactly.
    paths = {image["path"] for image in json.loads(listed.stdout)}
    assert {n.replace("\0", "\ufffd") for n in HOSTILE_NAMES if "bell" not in n} <= paths
