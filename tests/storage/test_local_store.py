from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from imageimport.errors import ConfigError
from imageimport.settings import Settings
from imageimport.storage import make_store
from imageimport.storage.local import LocalStore

HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../escape.jpg",
    "a/../../escape.jpg",
    "a/..",
    "a\\b.jpg",
    "a\x00b.jpg",
    "a//b.jpg",
    "a/",
    "./a.jpg",
    ".tmp-upload.part",
]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def temp_leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_round_trip_streams_in_chunks(store: LocalStore) -> None:
    data = os.urandom(300_000)
    store.put_file("ab/cd/image.jpg", io.BytesIO(data), len(data), "image/jpeg")

    assert store.exists("ab/cd/image.jpg")
    assert store.size("ab/cd/image.jpg") == len(data)
    chunks = list(store.iter_bytes("ab/cd/image.jpg", chunk_size=100_000))
    assert [len(chunk) for chunk in chunks] == [100_000, 100_000, 100_000]
    assert b"".join(chunks) == data
    assert (store.root / "ab" / "cd" / "image.jpg").read_bytes() == data
    assert store.presigned_url("ab/cd/image.jpg") is None


def test_missing_objects(store: LocalStore) -> None:
    assert not store.exists("nothing/here")
    assert store.size("nothing/here") is None
    with pytest.raises(KeyError):
        store.iter_bytes("nothing/here")
    store.delete("nothing/here")  # no error for something already gone


def test_delete(store: LocalStore) -> None:
    store.put_bytes("a/b", b"data", "application/octet-stream")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert list(store.list_keys()) == []


def test_overwrite_is_atomic(store: LocalStore) -> None:
    store.put_bytes("key.jpg", b"old" * 1000, "image/jpeg")
    seen_during_write: list[bytes] = []

    class SlowReader(io.BytesIO):
        """Looks at the stored object in the middle of the upload."""

        def read(self, size: int | None = -1) -> bytes:
            seen_during_write.append(b"".join(store.iter_bytes("key.jpg")))
            return super().read(10 if size is None or size < 0 else min(size, 10))

    new = b"new" * 10
    store.put_file("key.jpg", SlowReader(new), len(new), "image/jpeg")

    assert len(seen_during_write) > 3
    assert all(content == b"old" * 1000 for content in seen_during_write)
    assert b"".join(store.iter_bytes("key.jpg")) == new
    assert temp_leftovers(store.root) == []


def test_failed_write_keeps_old_object_and_leaves_no_temp_file(store: LocalStore) -> None:
    store.put_bytes("key.jpg", b"old", "image/jpeg")

    class BrokenReader(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() >= 5:
                raise ConnectionResetError("source went away")
            return super().read(5)

    with pytest.raises(ConnectionResetError):
        store.put_file("key.jpg", BrokenReader(b"0123456789"), 10, "image/jpeg")
    assert b"".join(store.iter_bytes("key.jpg")) == b"old"
    assert temp_leftovers(store.root) == []


def test_size_mismatch_is_refused(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="ended after 3 bytes"):
        store.put_file("short", io.BytesIO(b"abc"), 10, "text/plain")
    with pytest.raises(ValueError, match="longer"):
        store.put_file("long", io.BytesIO(b"abcdef"), 3, "text/plain")
    assert not store.exists("short")
    assert not store.exists("long")
    assert temp_leftovers(store.root) == []


def test_fsync_mode_writes_the_same(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=True)
    store.put_bytes("x/y", b"durable", "text/plain")
    assert b"".join(store.iter_bytes("x/y")) == b"durable"


def test_list_keys(store: LocalStore) -> None:
    for key in ["b/2.jpg", "a/1.jpg", "a/sub/3.jpg", "ab/4.jpg", "top.jpg"]:
        store.put_bytes(key, b"x", "image/jpeg")
    # A half-written upload from a crashed process must not show up as an object.
    (store.root / "a" / ".tmp-crashed.part").write_bytes(b"partial")

    assert sorted(store.list_keys()) == ["a/1.jpg", "a/sub/3.jpg", "ab/4.jpg", "b/2.jpg", "top.jpg"]
    assert sorted(store.list_keys("a/")) == ["a/1.jpg", "a/sub/3.jpg"]
    assert sorted(store.list_keys("a")) == ["a/1.jpg", "a/sub/3.jpg", "ab/4.jpg"]
    assert list(store.list_keys("a/sub/3")) == ["a/sub/3.jpg"]
    assert list(store.list_keys("missing/")) == []


def test_partial_objects_are_written_in_the_root_under_this_processes_name(
    store: LocalStore,
) -> None:
    from imageimport.tempfiles import owner_id

    seen: list[list[str]] = []

    class Watched(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            seen.append(sorted(path.name for path in store.root.iterdir() if path.is_file()))
            return super().read(size)

    store.put_file("a/b/key.jpg", Watched(b"data"), 4, "image/jpeg")
    (partial, lock) = seen[0]
    assert partial.startswith(f".tmp-{owner_id()}-") and partial.endswith(".part")
    assert lock == f".tmp-{owner_id()}.lock"
    assert temp_leftovers(store.root) == []


def test_older_versions_partial_objects_are_removed_once_old(store: LocalStore) -> None:
    """Before owner-named files, partial objects were written next to their key."""
    store.put_bytes("images/ab/key.jpg", b"x", "image/jpeg")
    old = store.root / "images" / "ab" / ".tmp-k7x2q9za.part"
    fresh = store.root / "images" / "ab" / ".tmp-w3e4r5t6.part"
    for path in (old, fresh):
        path.write_bytes(b"partial")
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))

    assert store.remove_leftovers(3600) == 1
    assert temp_leftovers(store.root) == [fresh]
    assert list(store.list_keys()) == ["images/ab/key.jpg"]
    # One walk per process: the store is not walked again every few minutes.
    os.utime(fresh, (day_ago, day_ago))
    assert store.remove_leftovers(3600) == 0


def test_list_keys_of_a_store_never_written(tmp_path: Path) -> None:
    assert list(LocalStore(tmp_path / "not-yet").list_keys()) == []


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError, match="Refusing"):
        store.put_bytes(key, b"x", "image/jpeg")
    for operation in (store.exists, store.size, store.iter_bytes, store.delete):
        with pytest.raises(ValueError, match="Refusing"):
            operation(key)
    assert not (store.root.parent / "escape.jpg").exists()


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", "a\\", "/etc"])
def test_hostile_prefixes_are_refused(store: LocalStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="Refusing"):
        list(store.list_keys(prefix))


def test_symlink_out_of_the_root_is_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes("link/evil.jpg", b"x", "image/jpeg")
    assert list(outside.iterdir()) == []


def test_check_creates_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "deep" / "objects")
    store.check()
    assert store.root.is_dir()
    assert list(store.root.iterdir()) == []  # the write probe cleaned up after itself


def test_check_reports_an_unusable_root(tmp_path: Path) -> None:
    # Tests run as root, which ignores permission bits: a path under a regular file is a
    # folder nobody can create.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = LocalStore(blocker / "objects")
    with pytest.raises(ConfigError, match=r"cannot be created: Not a directory"):
        store.check()


def test_check_reports_a_root_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="local object store folder"):
        LocalStore(blocker).check()


def test_make_store_defaults_to_a_folder_in_the_data_dir(tmp_path: Path) -> None:
    store = make_store(Settings(data_dir=tmp_path))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "objects"

    explicit = make_store(Settings(data_dir=tmp_path, objects_dir=tmp_path / "elsewhere"))
    assert isinstance(explicit, LocalStore)
    assert explicit.root == tmp_path / "elsewhere"
