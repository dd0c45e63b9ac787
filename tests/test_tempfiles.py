"""Owner-named temporary files: a sweep removes those of dead processes, never a live one's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imageimport import housekeeping, tempfiles
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.tempfiles import TempFiles

KIND = TempFiles("probe-", ".bin")

_HOLDER = """
import os, sys, tempfile
from pathlib import Path
from imageimport.tempfiles import TempFiles
kind = TempFiles("probe-", ".bin", Path(sys.argv[1]))
descriptor, name = tempfile.mkstemp(**kind.mkstemp_arguments())
os.write(descriptor, b"in use")
print(name, flush=True)
sys.stdin.read()  # until the test closes stdin or kills us
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str], Path]]]:
    """Start processes that each create one temporary file in tmp_path and keep it."""
    started: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        return process, Path(process.stdout.readline().strip())

    yield start
    for process in started:
        process.kill()
        process.wait()


def kind_in(directory: Path) -> TempFiles:
    return TempFiles(KIND.prefix, KIND.suffix, directory)


def names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_a_killed_owners_files_go_and_a_live_owners_stay(
    tmp_path: Path, holder: Callable[[], tuple[subprocess.Popen[str], Path]]
) -> None:
    killed, killed_file = holder()
    _, alive_file = holder()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed_file.exists()

    assert kind_in(tmp_path).sweep(max_age=3600) == 1

    assert not killed_file.exists()
    assert alive_file.exists()
    # The dead owner's lock file went with it; the live one's stays.
    assert len([name for name in names(tmp_path) if name.endswith(".lock")]) == 1


def test_a_stopped_owner_is_alive(
    tmp_path: Path, holder: Callable[[], tuple[subprocess.Popen[str], Path]]
) -> None:
    process, file = holder()
    process.send_signal(signal.SIGSTOP)
    try:
        assert kind_in(tmp_path).sweep(max_age=0) == 0
        assert file.exists()
    finally:
        process.send_signal(signal.SIGCONT)


def test_this_processes_own_files_are_kept(tmp_path: Path) -> None:
    descriptor, name = tempfile.mkstemp(**kind_in(tmp_path).mkstemp_arguments())
    os.close(descriptor)
    assert kind_in(tmp_path).sweep(max_age=0) == 0
    assert Path(name).exists()


def test_the_lock_file_lasts_only_while_a_file_is_in_hand(tmp_path: Path) -> None:
    kind = kind_in(tmp_path)
    with kind.new() as (descriptor, name):
        os.close(descriptor)
        assert names(tmp_path) == {Path(name).name, f"probe-{tempfiles.owner_id()}.lock"}
        os.unlink(name)
    assert names(tmp_path) == set()


def test_a_lock_file_deleted_from_under_its_owner_is_made_again(
    tmp_path: Path, holder: Callable[[], tuple[subprocess.Popen[str], Path]]
) -> None:
    kind = kind_in(tmp_path)
    descriptor, _ = tempfile.mkstemp(**kind.mkstemp_arguments())
    os.close(descriptor)
    lock = tmp_path / f"probe-{tempfiles.owner_id()}.lock"
    lock.unlink()  # e.g. systemd-tmpfiles cleaning /tmp
    descriptor, name = tempfile.mkstemp(**kind.mkstemp_arguments())
    os.close(descriptor)
    assert lock.exists()
    # Another process's sweep sees this process alive again.
    other, _ = holder()
    other.communicate("")  # it creates its own file, then exits normally
    assert Path(name).exists()


def test_names_without_an_owner_age_out(tmp_path: Path) -> None:
    """Written by versions before owner names: their writer cannot be checked."""
    old, fresh = tmp_path / "probe-abcd1234.bin", tmp_path / "probe-efgh5678.bin"
    old.write_bytes(b"old")
    fresh.write_bytes(b"fresh")
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))

    assert kind_in(tmp_path).sweep(max_age=3600) == 1
    assert names(tmp_path) == {fresh.name}


def test_a_fifo_posing_as_a_lock_file_does_not_hang_the_sweep(tmp_path: Path) -> None:
    owner = "0123456789abcdef"
    os.mkfifo(tmp_path / f"probe-{owner}.lock")
    (tmp_path / f"probe-{owner}-x.bin").write_bytes(b"?")
    assert kind_in(tmp_path).sweep(max_age=3600) == 0
    assert f"probe-{owner}-x.bin" in names(tmp_path)


def test_other_kinds_and_other_files_are_left_alone(tmp_path: Path) -> None:
    owner = "0123456789abcdef"
    others = {f"other-{owner}-x.bin", f"probe-{owner}-x.zip", "unrelated.bin"}
    for name in others:
        (tmp_path / name).write_bytes(b"?")
    day_ago = time.time() - 86400
    for name in others:
        os.utime(tmp_path / name, (day_ago, day_ago))
    assert kind_in(tmp_path).sweep(max_age=3600) == 0
    assert names(tmp_path) == others


def test_a_running_process_sweeps_the_store_periodically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "SWEEP_SECONDS", 0.1)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=None, s3_bucket=None)  # type: ignore[call-arg]
    runtime = Runtime(settings)
    try:
        objects = settings.effective_objects_dir
        objects.mkdir(parents=True, exist_ok=True)
        owner = "0123456789abcdef"  # no process holds its lock: it is gone
        lock = objects / f".tmp-{owner}.lock"
        lock.touch()
        partial = objects / f".tmp-{owner}-x.part"
        partial.write_bytes(b"partial")
        deadline = time.monotonic() + 30
        # A sweep removes the owner's files, then its lock: wait for both, not only the first.
        while partial.exists() or lock.exists():
            assert time.monotonic() < deadline, (partial.exists(), lock.exists())
            time.sleep(0.05)
    finally:
        runtime.close()
