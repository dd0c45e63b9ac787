"""The public ZIP route against the fake Dropbox, with hostile archives."""

from __future__ import annotations

import io
import random
import struct
import threading
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from imageimport.errors import ItemError, SourceUnavailable
from imageimport.pipeline.download import HEARTBEAT_SECONDS, Interrupted, Limits, download
from imageimport.pipeline.memory import zip_archive_bytes
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.dropbox import open_archives, provider
from imageimport.sources.dropbox import zip as dropbox_zip
from imageimport.sources.dropbox.zip import DropboxZipSource
from imageimport.sources.http import CHUNK_SIZE
from tests.fakes.dropbox import FakeDropbox, make_dropbox_app, shared_link
from tests.fakes.folder import FakeFile, FakeFolder, sample_folder
from tests.fakes.server import Fault, FaultPlan, RunningServer
from tests.security.hostile import zip_bomb

MiB = 1024 * 1024


class Fake:
    def __init__(self, server: RunningServer, state: FakeDropbox) -> None:
        self.server = server
        self.state = state

    def source(self, tmp: Path, folder: FakeFolder, **overrides: object) -> DropboxZipSource:
        values: dict[str, object] = {
            "data_dir": tmp,
            "dropbox_api_url": self.server.url,
            "dropbox_content_url": self.server.url,
            "dropbox_web_url": self.server.url,
            "dropbox_app_key": None,
            "dropbox_app_secret": None,
            "dropbox_refresh_token": None,
            "source_retry_max_wait_seconds": 0.05,
            "http_timeout_seconds": 10,
        }
        values.update(overrides)
        ref = provider.parse(shared_link("https://www.dropbox.com", folder))
        assert ref is not None
        source = provider.open(ref, Settings(**values))  # type: ignore[arg-type]
        assert isinstance(source, DropboxZipSource)
        return source


@pytest.fixture
def serve() -> Iterator[Callable[..., Fake]]:
    servers: list[RunningServer] = []

    def start(folders: list[FakeFolder], plan: FaultPlan | None = None, **options: object) -> Fake:
        app = make_dropbox_app(folders, **options)  # type: ignore[arg-type]
        server = RunningServer(app, plan)
        servers.append(server)
        return Fake(server, app.state.dropbox)

    yield start
    for server in servers:
        server.stop()


def read(source: DropboxZipSource, file: RemoteFile) -> bytes:
    with source.open(file) as chunks:
        return b"".join(chunks)


def make_zip(entries: dict[str, bytes], *, comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        archive.comment = comment
    return out.getvalue()


def serve_raw(serve: Callable[..., Fake], data: bytes | list[bytes]) -> tuple[Fake, FakeFolder]:
    folder = FakeFolder("raw")
    return serve([folder], raw_zips={folder.id: data}), folder


# --- the normal case ---------------------------------------------------------------------


def test_lists_the_same_files_as_the_folder(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    expected = {path: node for path, node in root.files()}
    # Hostile names come out clean: "../escape.jpg" cannot climb out of the folder.
    expected["escape.jpg"] = expected.pop("../escape.jpg")
    with fake.source(tmp_path, root) as source:
        listed = {f.path: f for f in source.list()}
        assert set(listed) == set(expected)  # no directory entries, top folder stripped
        for path, file in listed.items():
            assert file.size == expected[path].length
            assert file.name == path.rsplit("/", 1)[-1]
            assert read(source, file) == expected[path].read(), path


def test_downloads_once_and_reads_concurrently(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    expected = {p.removeprefix("../"): n.read() for p, n in root.files()}
    with fake.source(tmp_path, root) as source:
        files = list(source.list()) * 4
        assert list(source.list())  # listing again reuses the archive
        with ThreadPoolExecutor(max_workers=8) as pool:
            contents = list(pool.map(lambda f: read(source, f), files))
        for file, content in zip(files, contents, strict=True):
            assert content == expected[file.path], file.path
        assert source._archive is not None
        archive = source._archive.path
        assert archive is not None and archive.exists()
    assert fake.state.zip_downloads == 1
    assert not archive.exists()  # close() deleted the temporary file


def test_open_alone_triggers_the_download(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    with fake.source(tmp_path, root) as lister:
        red = next(f for f in lister.list() if f.path == "red.jpg")
    rebuilt = RemoteFile(id=red.id, name=red.name, path=red.path, size=red.size)
    with fake.source(tmp_path, root) as other:
        assert read(other, rebuilt) == dict(root.files())["red.jpg"].read()
    assert fake.state.zip_downloads == 2


def test_rate_limits_errors_and_drops_are_retried(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    root, _ = sample_folder()
    plan = FaultPlan(
        [
            Fault("429", path="/scl/fo/.*", times=1, retry_after=0.01),
            Fault("500", path="/zip_download_get/.*", times=1),
            Fault("drop", path="/zip_download_get/.*", times=1),
        ]
    )
    fake = serve([root], plan)
    with fake.source(tmp_path, root) as source:
        assert len(list(source.list())) == len(root.files())
    assert sum(plan.seen.values()) == 3


def test_a_private_link_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    secret = FakeFolder("secret", [FakeFile("a.jpg", b"x")], public=False)
    fake = serve([secret])
    with fake.source(tmp_path, secret) as source, pytest.raises(SourceUnavailable) as raised:
        list(source.list())
    assert "web page instead of the folder's ZIP" in str(raised.value)


def test_a_removed_link_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    fake = serve([])
    with (
        fake.source(tmp_path, FakeFolder("gone")) as source,
        pytest.raises(SourceUnavailable, match="404"),
    ):
        list(source.list())


def test_a_non_zip_body_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    # Served as application/zip, so only the content itself gives it away.
    fake, folder = serve_raw(serve, b"<!DOCTYPE html><html>Sign in</html>" * 10)
    with fake.source(tmp_path, folder) as source, pytest.raises(SourceUnavailable) as raised:
        list(source.list())
    assert "web page" in str(raised.value)


# --- guards against hostile archives -------------------------------------------------------


def test_entry_with_a_bomb_ratio_is_an_item_error(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    data = make_zip({"Top/bomb.bin": b"\0" * (5 * MiB), "Top/ok.txt": b"fine"})
    fake, folder = serve_raw(serve, data)
    with fake.source(tmp_path, folder) as source:
        files = {f.path: f for f in source.list()}
        assert set(files) == {"bomb.bin", "ok.txt"}
        with pytest.raises(ItemError, match="zip bomb"):
            read(source, files["bomb.bin"])
        assert read(source, files["ok.txt"]) == b"fine"


def test_a_small_well_compressed_entry_is_not_a_bomb(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    fake, folder = serve_raw(serve, make_zip({"zeros.bin": b"\0" * (MiB - 1)}))
    with fake.source(tmp_path, folder) as source:
        (file,) = source.list()
        assert read(source, file) == b"\0" * (MiB - 1)


@pytest.mark.parametrize(
    ("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")]
)
def test_entries_dropbox_does_not_make_are_refused_unopened(
    serve: Callable[..., Fake], tmp_path: Path, method: int, name: str
) -> None:
    """bzip2 and LZMA inflate a whole compressed block per read, whatever the header says: a
    233-byte entry declaring 1,000 bytes would unpack 64 MiB at once. None of it is unpacked."""
    data = zip_bomb(method, 64 * MiB, name="Top/bomb.png", others={"Top/ok.txt": b"fine"})
    fake, folder = serve_raw(serve, data)
    with fake.source(tmp_path, folder) as source:
        files = {f.path: f for f in source.list()}
        assert files["bomb.png"].size == 1000
        tracemalloc.start()
        try:
            with pytest.raises(ItemError, match=f"bomb.png is compressed with {name} inside"):
                read(source, files["bomb.png"])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MiB, peak
        assert read(source, files["ok.txt"]) == b"fine"


def test_deflate_entries_unpack_one_bounded_chunk_at_a_time(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    """zipfile bounds each deflate read's output (zlib's max_length): an entry of 64 MiB of
    zeros, 64 kB packed, never has more than a chunk of it in memory at once."""
    size = 64 * MiB
    fake, folder = serve_raw(serve, make_zip({"zeros.bin": bytes(size)}))
    with fake.source(tmp_path, folder, zip_max_ratio=100_000) as source:
        (file,) = source.list()
        received = 0
        tracemalloc.start()
        try:
            with source.open(file) as chunks:
                for chunk in chunks:
                    assert len(chunk) <= CHUNK_SIZE
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == size
    assert peak < 4 * CHUNK_SIZE, peak


def test_archive_unpacking_beyond_the_total_limit_is_refused(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    data = make_zip({f"Top/{i}.bin": b"\0" * MiB for i in range(4)})
    assert len(data) < 100_000
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder, zip_max_total_bytes=3 * MiB) as source,
        pytest.raises(SourceUnavailable, match="unpack to 4194304 bytes"),
    ):
        list(source.list())


def test_archive_download_beyond_the_total_limit_is_refused(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    # Tiny contents, big archive (a long comment): only the download size is over.
    data = make_zip({"a.txt": b"x"}, comment=b"c" * 60_000)
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder, zip_max_total_bytes=50_000) as source,
        pytest.raises(SourceUnavailable, match="ZIP download is bigger"),
    ):
        list(source.list())


def test_a_download_announced_beyond_the_limit_is_refused_up_front(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("noise.bin", random.Random(1).randbytes(600_000))
    data = out.getvalue()
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder, zip_max_total_bytes=500_000) as source,
        pytest.raises(SourceUnavailable) as raised,
    ):
        list(source.list())
    # The announced size, not the count where streaming would have stopped.
    assert f"at {len(data)} bytes" in str(raised.value)


def test_a_streamed_download_beyond_the_total_limit_is_refused(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    # No Content-Length this time: the bytes are counted as they arrive.
    data = make_zip({"a.txt": b"x"}, comment=b"c" * 60_000)
    fake, folder = serve_raw(serve, [data[i : i + 8192] for i in range(0, len(data), 8192)])
    with (
        fake.source(tmp_path, folder, zip_max_total_bytes=50_000) as source,
        pytest.raises(SourceUnavailable, match="ZIP download is bigger"),
    ):
        list(source.list())


def test_data_before_the_archive_is_refused(serve: Callable[..., Fake], tmp_path: Path) -> None:
    # zipfile itself would open this (it allows self-extractor prefixes).
    data = b"<!DOCTYPE html><html>Sign in</html>" + make_zip({"a.txt": b"x"})
    fake, folder = serve_raw(serve, data)
    with fake.source(tmp_path, folder) as source, pytest.raises(SourceUnavailable) as raised:
        list(source.list())
    assert "web page" in str(raised.value)


def test_too_many_entries_are_refused(serve: Callable[..., Fake], tmp_path: Path) -> None:
    data = make_zip({f"{i}.txt": b"x" for i in range(11)})
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder, zip_max_entries=10) as source,
        pytest.raises(SourceUnavailable, match="holds 11 entries"),
    ):
        list(source.list())


def test_too_many_entries_are_refused_before_reading_the_directory(
    serve: Callable[..., Fake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end record's count is enough: a huge central directory is never walked."""
    walked: list[object] = []
    real_records = dropbox_zip.records

    def spy(*args: Any) -> Iterator[Any]:
        walked.append(args)
        return real_records(*args)

    fake, folder = serve_raw(serve, make_zip({f"{i}.txt": b"x" for i in range(11)}))
    monkeypatch.setattr(dropbox_zip, "records", spy)
    with (
        fake.source(tmp_path, folder, zip_max_entries=10) as source,
        pytest.raises(SourceUnavailable, match="holds 11 entries"),
    ):
        list(source.list())
    assert walked == []


def test_an_end_record_understating_the_entries_does_not_help(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    data = bytearray(make_zip({f"{i}.txt": b"x" for i in range(11)}))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 1, 1)  # entries on this disk, entries in total
    fake, folder = serve_raw(serve, bytes(data))
    with (
        fake.source(tmp_path, folder, zip_max_entries=10) as source,
        pytest.raises(SourceUnavailable, match="holds 11 entries or more"),
    ):
        list(source.list())


def test_hostile_names_become_clean_relative_paths(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    entries = {
        "../x.jpg": b"1",
        "/abs.jpg": b"2",
        "a\\..\\b.jpg": b"3",
        "a/../../c.jpg": b"4",
        "./d.jpg": b"5",
        "ctrl\x01\x7f.jpg": b"6",
        "nulXname.jpg": b"7",
        "..": b"8",
        "../": b"",
        "x/./../": b"",
    }
    data = make_zip(entries).replace(b"nulXname", b"nul\x00name")
    fake, folder = serve_raw(serve, data)
    with fake.source(tmp_path, folder) as source:
        files = list(source.list())
        paths = {f.path: read(source, f) for f in files}
    assert paths == {
        "x.jpg": b"1",
        "abs.jpg": b"2",
        "a/b.jpg": b"3",
        "a/c.jpg": b"4",
        "d.jpg": b"5",
        "ctrl.jpg": b"6",
        "nul": b"7",  # zipfile ends a name at NUL
    }
    for path in paths:
        parts = path.split("/")
        assert not path.startswith("/") and "\\" not in path
        assert all(part not in ("", ".", "..") for part in parts)
        assert all(ch >= " " and ch != "\x7f" for ch in path)
    assert len({f.id for f in files}) == len(files)


def test_duplicate_names_get_distinct_ids(serve: Callable[..., Fake], tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("Top/same.txt", b"first")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("Top/same.txt", b"second")
        archive.writestr("Top/../same.txt", b"third")
    fake, folder = serve_raw(serve, out.getvalue())
    with fake.source(tmp_path, folder) as source:
        files = list(source.list())
        assert [f.path for f in files] == ["same.txt"] * 3
        assert len({f.id for f in files}) == 3
        # Which bytes each id maps to is the archive's business; each id must stay readable.
        assert all(read(source, f) for f in files)


def test_top_folder_is_kept_when_entries_do_not_share_one(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    fake, folder = serve_raw(serve, make_zip({"a.txt": b"a", "sub/b.txt": b"b"}))
    with fake.source(tmp_path, folder) as source:
        assert sorted(f.path for f in source.list()) == ["a.txt", "sub/b.txt"]


def test_encrypted_entries_are_item_errors(serve: Callable[..., Fake], tmp_path: Path) -> None:
    data = bytearray(make_zip({"Top/locked.jpg": b"secret", "Top/open.jpg": b"plain"}))
    # Set the "encrypted" flag of the first entry in its local and central headers.
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    fake, folder = serve_raw(serve, bytes(data))
    with fake.source(tmp_path, folder) as source:
        files = {f.path: f for f in source.list()}
        with pytest.raises(ItemError, match="is encrypted inside the folder's ZIP"):
            read(source, files["locked.jpg"])
        assert read(source, files["open.jpg"]) == b"plain"


def test_an_entry_larger_than_its_header_never_yields_more(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    """A central directory understating the size: zipfile stops at the declared size and
    reports the CRC mismatch; either way no more than the declared bytes come out."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("liar.bin", b"A" * 1000)
    data = bytearray(out.getvalue())
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)  # uncompressed size: 10
    fake, folder = serve_raw(serve, bytes(data))
    with fake.source(tmp_path, folder) as source:
        (file,) = source.list()
        assert file.size == 10
        received = bytearray()
        with pytest.raises(ItemError), source.open(file) as chunks:
            for chunk in chunks:
                received += chunk
        assert len(received) <= 10


def test_a_damaged_archive_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    data = bytearray(make_zip({"a.txt": b"x" * 100}))
    central = data.find(b"PK\x01\x02")
    data[central : central + 4] = b"XXXX"
    fake, folder = serve_raw(serve, bytes(data))
    with (
        fake.source(tmp_path, folder) as source,
        pytest.raises(SourceUnavailable, match="damaged"),
    ):
        list(source.list())


@pytest.mark.parametrize("tail", ["cut short", "overwritten"])
def test_an_archive_without_its_end_record_is_unavailable(
    serve: Callable[..., Fake], tmp_path: Path, tail: str
) -> None:
    data = make_zip({"a.txt": b"x" * 100})
    data = data[:-10] if tail == "cut short" else data[:-22] + b"\xff" * 22
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder) as source,
        pytest.raises(SourceUnavailable, match="the folder's ZIP download"),
    ):
        list(source.list())


# --- what an open archive costs ------------------------------------------------------------


def _zip64(data: bytes, directory_size: int | None = None) -> bytes:
    """`data` (a ZIP without comment) with its end record moved to zip64 records, the way
    archives of more than 65,535 entries or 4 GiB have it; the zip64 record may state another
    size of the central directory."""
    end = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, size, offset, _ = struct.unpack(zipfile.structEndArchive, data[end:])
    record = struct.pack(
        zipfile.structEndArchive64,
        zipfile.stringEndArchive64,
        44,
        45,
        45,
        0,
        0,
        count,
        count,
        size if directory_size is None else directory_size,
        offset,
    )
    locator = struct.pack(zipfile.structEndArchive64Locator, b"PK\x06\x07", 0, end, 1)
    classic = struct.pack(
        zipfile.structEndArchive, b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
    )
    return data[:end] + record + locator + classic


def _directory_size(data: bytes) -> int:
    end = data.rfind(b"PK\x05\x06")
    return int(struct.unpack(zipfile.structEndArchive, data[end:])[5])


@pytest.fixture(autouse=True)
def own_places(monkeypatch: pytest.MonkeyPatch) -> None:
    """Places among the open archives of each test's own, whatever another test left."""
    monkeypatch.setattr(open_archives, "_shared", {})


@pytest.mark.parametrize("as_zip64", [False, True])
def test_a_central_directory_past_its_limit_is_refused_before_it_is_read(
    serve: Callable[..., Fake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_zip64: bool
) -> None:
    data = make_zip({f"Top/{i}.txt": b"x" for i in range(10)})
    size = _directory_size(data)
    if as_zip64:
        data = _zip64(data)
    walked: list[object] = []
    real_records = dropbox_zip.records

    def spy(*args: Any) -> Iterator[Any]:
        walked.append(args)
        return real_records(*args)

    monkeypatch.setattr(dropbox_zip, "records", spy)
    fake, folder = serve_raw(serve, data)
    with fake.source(tmp_path, folder, zip_max_index_bytes=size) as source:
        assert len(list(source.list())) == 10  # at the limit
    assert walked
    walked.clear()
    with (
        fake.source(tmp_path, folder, zip_max_index_bytes=size - 1) as source,
        pytest.raises(SourceUnavailable) as raised,
    ):
        list(source.list())
    assert str(raised.value) == (
        "The folder's ZIP download has a central directory (its table of contents) of "
        f"{size:,} bytes, more than the {size - 1:,}-byte limit (ZIP_MAX_INDEX_BYTES)."
    )
    assert walked == []


def test_the_zip64_size_of_the_directory_is_the_one_checked(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    """The classic end record says 0xFFFFFFFF and defers to the zip64 one, which may claim a
    terabyte: refused on that claim, not read up to the end of the file."""
    data = _zip64(make_zip({"Top/a.txt": b"x"}), directory_size=2**40)
    fake, folder = serve_raw(serve, data)
    with (
        fake.source(tmp_path, folder) as source,
        pytest.raises(SourceUnavailable, match="of 1,099,511,627,776 bytes, more than"),
    ):
        list(source.list())


def _write_zip(target: Path, names: Iterator[str]) -> int:
    count = 0
    with zipfile.ZipFile(target, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name in names:
            archive.writestr(name, b"")
            count += 1
    return count


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(lambda: (f"Top/{n:06d}.jpg" for n in range(20_000)), id="short-names"),
        pytest.param(
            lambda: (f"Top/{n:06d}-{'n' * 2000}.jpg" for n in range(20_000)), id="long-names"
        ),
        pytest.param(lambda: ("Top/same.jpg" for _ in range(20_000)), id="one-name-repeated"),
        pytest.param(lambda: (f"Top/{n // 2:06d}.jpg" for n in range(20_000)), id="names-twice"),
    ],
)
def test_an_open_archive_costs_a_bounded_few_hundred_bytes_a_file(
    tmp_path: Path, names: Callable[[], Iterator[str]]
) -> None:
    """What indexing an archive and listing it take (pipeline.memory counts it per open
    archive, from ZIP_MAX_ENTRIES), whatever the names: zipfile's ZipInfos, kept with the
    names, took 900 bytes a file plus 3 per byte of name. Paths that come again are numbered
    (`#2`, `#3`...) from the last number given, never from 2 again (main's way: 20,000 of one
    path tried 200 million ids)."""
    path = tmp_path / "many.zip"
    count = _write_zip(path, names())
    settings = Settings(_env_file=None, data_dir=tmp_path, zip_max_entries=count)  # type: ignore[call-arg]
    archive = dropbox_zip._Archive()
    archive.path = path

    def listing() -> Iterator[str | None]:
        numbers: dict[int, int] = {}
        for _, file_path, ordinal in dropbox_zip._files(archive):
            yield dropbox_zip._recall_id(archive.index, file_path, ordinal, numbers)

    tracemalloc.start()
    try:
        archive.directory, archive.strip = dropbox_zip._survey(path, settings)
        dropbox_zip._index(archive)
        kept, _ = tracemalloc.get_traced_memory()
        listed = sum(1 for _ in listing())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(archive.index) == count == listed
    assert kept < count * 256, kept / count
    assert peak < zip_archive_bytes(settings), (peak, zip_archive_bytes(settings))
    ids = set(listing())
    assert None not in ids and len(ids) == count


def _folders() -> tuple[FakeFolder, FakeFolder]:
    return (
        FakeFolder("A", [FakeFile("a.jpg", b"a" * 100)]),
        FakeFolder("B", [FakeFile("b.jpg", b"b" * 100)]),
    )


def test_past_its_places_an_archive_waits_for_one_unread_long_enough(
    serve: Callable[..., Fake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one place, a second archive takes the first one's once that has been unread for
    IDLE_SECONDS; the first comes back (downloaded again) when it is needed again."""
    monkeypatch.setattr(open_archives, "IDLE_SECONDS", 0.5)
    first_folder, second_folder = _folders()
    fake = serve([first_folder, second_folder])
    with (
        fake.source(tmp_path, first_folder, zip_max_open_archives=1) as first,
        fake.source(tmp_path, second_folder, zip_max_open_archives=1) as second,
    ):
        (a,) = first.list()
        assert first._archive is not None
        first_path = first._archive.path
        assert first_path is not None and first_path.exists()
        with ThreadPoolExecutor(1) as pool:
            with first.open(a) as chunks:
                # In use: the second waits, however long, while the first is read.
                waiting = pool.submit(lambda: list(second.list()))
                time.sleep(1.5)
                assert not waiting.done()
                assert b"".join(chunks) == b"a" * 100
            (b,) = waiting.result(timeout=30)
        assert not first_path.exists()  # its place went to the second
        assert read(second, b) == b"b" * 100
        assert read(first, a) == b"a" * 100  # back once the second was unread for long enough
        assert fake.state.zip_downloads == 3
        assert open_archives.shared_places(1).held() == 1


def test_a_file_waiting_for_a_place_goes_back_when_the_process_stops(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    """A file of an archive that has no place waits (heartbeats go on meanwhile, from the
    download's watchdog), and once the process stops, goes back to the queue as untried
    (Interrupted) instead of waiting on."""
    first_folder, second_folder = _folders()
    fake = serve([first_folder, second_folder])
    with fake.source(tmp_path, second_folder, zip_max_open_archives=5) as lister:
        (b,) = lister.list()
    beats: list[float] = []
    abort = threading.Event()
    limits = Limits(MiB, 3600, 0, 60)
    with (
        fake.source(tmp_path, first_folder, zip_max_open_archives=1) as first,
        fake.source(tmp_path, second_folder, zip_max_open_archives=1) as second,
    ):
        (a,) = first.list()
        with first.open(a), ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                download, second, b, limits, lambda: beats.append(time.monotonic()), abort
            )
            time.sleep(HEARTBEAT_SECONDS * 2)
            assert not waiting.done()
            abort.set()
            with pytest.raises(Interrupted):
                waiting.result(timeout=30)
    assert len(beats) >= 1
    assert fake.state.zip_downloads == 2  # the second's archive was never downloaded again


def test_closing_a_source_does_not_wait_for_its_archive(
    serve: Callable[..., Fake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import cancelled while one of its files waits for a place: closing its source
    returns at once, and the archive that wait brings is let go as soon as it has been used."""
    monkeypatch.setattr(open_archives, "IDLE_SECONDS", 0.5)
    first_folder, second_folder = _folders()
    fake = serve([first_folder, second_folder])
    with fake.source(tmp_path, first_folder, zip_max_open_archives=1) as first:
        second = fake.source(tmp_path, second_folder, zip_max_open_archives=1)
        (a,) = first.list()
        with ThreadPoolExecutor(1) as pool:
            with first.open(a):
                waiting = pool.submit(lambda: list(second.list()))
                time.sleep(1)
                second.close()  # would wait as long as the first is read if it waited at all
                assert not waiting.done()
            assert [f.path for f in waiting.result(timeout=30)] == ["b.jpg"]
        assert second._archive is None
        assert open_archives.shared_places(1).held() == 0  # the first's went to the second
    assert fake.state.zip_downloads == 2
