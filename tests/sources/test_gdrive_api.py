"""The Drive API route against the fake Drive, through the real google-api-python-client."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageimport.errors import ItemError, SourceUnavailable, TransientError
from imageimport.settings import Settings
from imageimport.sources.base import FolderRef, RemoteFile
from imageimport.sources.gdrive.api import DriveApiSource
from imageimport.sources.gdrive.links import canonical_folder_url
from imageimport.sources.http import CHUNK_SIZE
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, make_image, sample_folder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import Fault, FaultPlan, RunningServer
from tests.sources.drive import drive_of, drive_settings, read, ref_for

KEY = "AIzaSyTEST-the-right-key_0123456789"


def settings_for(server: RunningServer, tmp_path: Path, key: str = KEY) -> Settings:
    return drive_settings(server, tmp_path, google_api_key=key, retry_attempts=5)


@pytest.fixture
def sample() -> Iterator[tuple[FakeFolder, RunningServer]]:
    tree, _ = sample_folder()
    with RunningServer(make_gdrive_app([tree], api_key=KEY)) as server:
        yield tree, server


def test_lists_the_sample_folder_recursively_with_sizes_and_checksums(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    with DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        listed = {f.path: f for f in source.list()}
    expected = dict(tree.files())
    assert set(listed) == set(expected)
    assert "sub/deeper/deep.jpg" in listed and "../escape.jpg" in listed
    for path, fake in expected.items():
        remote = listed[path]
        assert remote.id == fake.id
        assert remote.name == fake.name
        assert remote.size == fake.length
        assert remote.checksum == f"md5:{fake.md5}"
        assert remote.mime_type == fake.mime_type
    assert listed["red.jpg"].extra["image_metadata"] == {"width": 640, "height": 480}
    # Every request went through the configured endpoint and carried the key, in a header.
    calls = drive_of(server).requests
    assert calls and all(c.path.startswith("/drive/v3/files") for c in calls)
    assert all("key" not in c.params and c.headers["x-goog-api-key"] == KEY for c in calls)
    listing = drive_of(server).calls("/drive/v3/files")
    assert {c.params["q"] for c in listing} == {
        f"'{folder.id}' in parents and trashed=false"
        for folder in [tree, *(n for _, n in tree.walk() if isinstance(n, FakeFolder))]
    }
    assert all(c.params["supportsAllDrives"] == "true" for c in listing)
    assert all(c.params["includeItemsFromAllDrives"] == "true" for c in listing)


def test_downloads_equal_the_files_bytes(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    with DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        for file in source.list():
            fake = tree.find(file.id)
            assert isinstance(fake, FakeFile)
            if fake.size is None:
                assert read(source, file) == fake.content
    downloads = [c for c in drive_of(server).requests if c.params.get("alt") == "media"]
    assert downloads, "nothing was downloaded"
    # The key travels in a header, never in a download URL that could end up in a log.
    assert all("key" not in c.params and c.headers["x-goog-api-key"] == KEY for c in downloads)


def test_a_50_mb_file_streams_chunk_by_chunk(tmp_path: Path) -> None:
    big = FakeFile("big.jpg", make_image(64, 64, seed=3), "image/jpeg", size=50 * 1024 * 1024)
    tree = FakeFolder("big", [big])
    with (
        RunningServer(make_gdrive_app([tree], api_key=KEY)) as server,
        DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        (file,) = source.list()
        assert file.size == big.length
        digest, total, count = hashlib.md5(), 0, 0
        with source.open(file) as chunks:
            for chunk in chunks:
                assert 0 < len(chunk) <= CHUNK_SIZE
                digest.update(chunk)
                total += len(chunk)
                count += 1
    assert total == big.length
    assert count >= big.length // CHUNK_SIZE
    assert f"md5:{digest.hexdigest()}" == file.checksum


def test_pages_through_a_folder_of_2500_files(tmp_path: Path) -> None:
    tree = big_folder(2500)
    with (
        RunningServer(make_gdrive_app([tree], api_key=KEY)) as server,
        DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        listing = source.list()
        first = next(listing)
        # Streamed: the first file is out before the second page was asked for.
        assert len(drive_of(server).calls("/drive/v3/files")) == 1
        files = [first, *listing]
        pages = drive_of(server).calls("/drive/v3/files")
    assert len(files) == 2500
    assert len({f.id for f in files}) == 2500
    assert {f.path for f in files} == {p for p, _ in tree.files()}
    assert len(pages) >= 3
    assert all(p.params["pageSize"] == "1000" for p in pages)
    assert "pageToken" not in pages[0].params
    assert all(p.params.get("pageToken") for p in pages[1:])


def test_shortcuts_are_followed_docs_skipped_and_loops_stopped(tmp_path: Path) -> None:
    elsewhere_image = make_image(40, 30, seed=11)
    elsewhere = FakeFolder(
        "elsewhere",
        [
            FakeFile("target.jpg", elsewhere_image, "image/jpeg"),
            FakeFolder("linked", [FakeFile("in-linked.png", make_image(8, 8, "PNG"), "image/png")]),
            FakeFile("doc", b"", "application/vnd.google-apps.document"),
        ],
    )
    target, linked, doc = elsewhere.children
    loop = FakeFile("loop back to the top", id="1LoopShortcut00000000000000000000")
    tree = FakeFolder(
        "with shortcuts",
        [
            FakeFile("shortcut to target.jpg", shortcut_to=target.id),
            FakeFile("shortcut to doc", shortcut_to=doc.id),
            FakeFile("shortcut to linked", shortcut_to=linked.id),
            FakeFile("A sheet", b"", "application/vnd.google-apps.spreadsheet"),
            FakeFolder("sub", [FakeFile("plain.jpg", make_image(9, 9), "image/jpeg"), loop]),
        ],
    )
    loop.shortcut_to = tree.id
    with (
        RunningServer(make_gdrive_app([tree, elsewhere], api_key=KEY)) as server,
        DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        listed = {f.path: f for f in source.list()}
        assert set(listed) == {
            "shortcut to target.jpg",
            "shortcut to linked/in-linked.png",
            "sub/plain.jpg",
        }
        followed = listed["shortcut to target.jpg"]
        assert followed.id == target.id
        assert followed.extra["shortcut_id"] == tree.children[0].id
        assert read(source, followed) == elsewhere_image


def test_resource_keys_are_sent_for_the_folder_and_for_files(tmp_path: Path) -> None:
    image = make_image(20, 20, seed=5)
    tree = FakeFolder("keyed", [FakeFile("keyed.jpg", image, "image/jpeg")])
    file_key, folder_key = "0-fileKey_123", "0-folderKey-456"
    app = make_gdrive_app(
        [tree], api_key=KEY, resource_keys={tree.id: folder_key, tree.children[0].id: file_key}
    )
    with RunningServer(app) as server:
        settings = settings_for(server, tmp_path)
        with pytest.raises(SourceUnavailable):
            list(DriveApiSource(ref_for(tree), settings).list())
        with DriveApiSource(ref_for(tree, folder_key), settings) as source:
            (file,) = source.list()
        assert file.extra["resource_key"] == file_key
        # `open` may run in another process, from a RemoteFile rebuilt from its JSON.
        rebuilt = RemoteFile(**json.loads(json.dumps(dataclasses.asdict(file))))
        with DriveApiSource(ref_for(tree, folder_key), settings) as other_process:
            assert read(other_process, rebuilt) == image
        sent = [c.headers.get("x-goog-drive-resource-keys") for c in drive_of(server).requests]
        assert f"{tree.id}/{folder_key}" in sent
        assert f"{file.id}/{file_key}" in sent


def test_rate_limits_and_server_errors_are_retried(tmp_path: Path) -> None:
    tree, _ = sample_folder()
    faults = FaultPlan(
        [
            Fault("429", path="/drive/v3/files", times=2, retry_after=0.01),
            Fault("500", path="/drive/v3/files", times=1),
            Fault("drop", path="/drive/v3/files", times=1),
            Fault("500", path=f"/drive/v3/files/{tree.id}", times=1),
            Fault("429", path="/drive/v3/files/[^/]+", times=1, retry_after=0.01),
        ]
    )
    with (
        RunningServer(make_gdrive_app([tree], api_key=KEY), faults) as server,
        DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        listed = {f.path: f for f in source.list()}
        assert set(listed) == {p for p, _ in tree.files()}
        red = tree.children[0]
        assert isinstance(red, FakeFile)
        assert read(source, listed["red.jpg"]) == red.content
    assert sum(faults.seen.values()) == 7  # 4 on files.list, 2 on the root files.get, 1 download


def test_persistent_server_errors_end_as_transient(tmp_path: Path) -> None:
    tree, _ = sample_folder()
    faults = FaultPlan([Fault("500", path="/drive/v3/files.*", times=100)])
    with (
        RunningServer(make_gdrive_app([tree], api_key=KEY), faults) as server,
        DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        with pytest.raises(TransientError, match="500"):
            list(source.list())
        red = RemoteFile(tree.children[0].id, "red.jpg", "red.jpg")
        with pytest.raises(TransientError, match="500"), source.open(red) as chunks:
            b"".join(chunks)


def test_a_connection_dropped_mid_download_is_transient(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    red = tree.children[0]
    assert isinstance(red, FakeFile)
    server.faults.add(Fault("drop", path=f"/drive/v3/files/{red.id}", times=1))
    with DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        remote = RemoteFile(red.id, red.name, red.name)
        with pytest.raises(TransientError, match="dropped"), source.open(remote) as chunks:
            b"".join(chunks)
        assert read(source, remote) == red.content  # the next attempt works


@pytest.mark.parametrize("missing", [False, True])
def test_a_private_or_missing_folder_is_unavailable(missing: bool, tmp_path: Path) -> None:
    tree = FakeFolder("secret", [FakeFile("a.jpg", make_image(5, 5), "image/jpeg")], public=False)
    absent = "1NoSuchFolder00000000000000000000"
    ref = FolderRef("gdrive", absent, canonical_folder_url(absent)) if missing else ref_for(tree)
    with (
        RunningServer(make_gdrive_app([tree], api_key=KEY)) as server,
        pytest.raises(SourceUnavailable) as caught,
    ):
        list(DriveApiSource(ref, settings_for(server, tmp_path)).list())
    message = str(caught.value)
    assert ref.url in message
    assert "was not found or is not shared with 'Anyone with the link'" in message


def test_a_file_link_id_is_not_listed_as_a_folder(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    file_ref = FolderRef("gdrive", tree.children[0].id, "https://drive.google.com/x")
    with pytest.raises(SourceUnavailable, match="points at a file"):
        list(DriveApiSource(file_ref, settings_for(server, tmp_path)).list())


def test_a_wrong_api_key_is_reported_without_revealing_it(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    wrong = "AIzaSyWRONG-key-that-must-not-leak-42"
    source = DriveApiSource(ref_for(tree), settings_for(server, tmp_path, key=wrong))
    with pytest.raises(SourceUnavailable) as caught:
        list(source.list())
    assert "GOOGLE_API_KEY is not valid" in str(caught.value)
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all(wrong not in repr(e) and wrong not in str(e) for e in chain)
    red = RemoteFile(tree.children[0].id, "red.jpg", "red.jpg")
    with pytest.raises(SourceUnavailable) as caught_download, source.open(red) as chunks:
        b"".join(chunks)
    assert wrong not in str(caught_download.value)


def test_a_deleted_file_and_a_google_doc_fail_as_items(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    with DriveApiSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        gone = RemoteFile("1DeletedFile00000000000000000000000", "gone.jpg", "sub/gone.jpg")
        with pytest.raises(ItemError, match=r"'sub/gone\.jpg' .*deleted"), source.open(gone) as c:
            b"".join(c)
        folder = RemoteFile(tree.children[-1].id, "sub", "sub")
        with pytest.raises(ItemError, match="cannot be downloaded"), source.open(folder) as c:
            b"".join(c)
