"""Whether an import is complete is asked once per import and interval by the process that
settled its items, not once per file: that query reads past the settled rows to find a
pending one, so one per file made an import's cost grow with its size (bench/RESULTS.md,
"Issue 12, cost growth"). The import still ends as soon as its last file is settled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from imageimport import db
from imageimport.pipeline.pool import SETTLE_SECONDS
from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import
from imageimport.settings import Settings
from tests.fakes.folder import big_folder
from tests.pipeline.routes import start_route

FILES = 200


def test_completion_is_checked_per_interval_not_per_file(
    make_settings: Callable[..., Settings], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[float] = []
    lock = threading.Lock()
    has_items_in = db.has_items_in

    def counted(*args: Any, **kwargs: Any) -> bool:
        with lock:
            checks.append(time.monotonic())
        return has_items_in(*args, **kwargs)

    monkeypatch.setattr(db, "has_items_in", counted)
    with start_route("gdrive-api", big_folder(FILES, seed=12, name="settled")) as route:
        runtime = Runtime(make_settings(database_url=database_url, **route.settings))
        try:
            started = time.monotonic()
            result = run_import(runtime, route.url, concurrency=8)
            elapsed = time.monotonic() - started
        finally:
            runtime.close()
    assert result.state == "succeeded", result.error
    assert result.counters.imported == FILES
    # One by the planner once the folder is listed, then at most one per interval, and one
    # when the pool stops.
    assert len(checks) <= elapsed / SETTLE_SECONDS + 3, (len(checks), elapsed)
