"""The API route against the fake Dropbox, through the real `dropbox` SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dropbox.content_hash import content_hash as sdk_content_hash

from imageimport.errors import ItemError, SourceUnavailable, TransientError
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.dropbox import provider
from imageimport.sources.dropbox.api import DropboxApiSource
from tests.fakes.dropbox import FakeDropbox, content_hash, make_dropbox_app, shared_link
from tests.fakes.folder import FakeFile, FakeFolder, big_folder, sample_folder
from tests.fakes.server import Fault, FaultPlan, RunningServer

LIST = "files/list_folder"
CONTINUE = "files/list_folder/continue"
DOWNLOAD = "sharing/get_shared_link_file"


class Fake:
    def __init__(self, server: RunningServer, state: FakeDropbox) -> None:
        self.server = server
        self.state = state

    def settings(self, tmp: Path, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp,
            "dropbox_api_url": self.server.url,
            "dropbox_content_url": self.server.url,
            "dropbox_web_url": self.server.url,
            "dropbox_app_key": "app-key",
            "dropbox_app_secret": "app-secret",
            "dropbox_refresh_token": "refresh-token",
            "source_retry_max_wait_seconds": 0.05,
            "http_timeout_seconds": 10,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def source(self, tmp: Path, folder: FakeFolder, **overrides: object) -> DropboxApiSource:
        ref = provider.parse(shared_link("https://www.dropbox.com", folder))
        assert ref is not None
        source = provider.open(ref, self.settings(tmp, **overrides))
        assert isinstance(source, DropboxApiSource)
        return source


@pytest.fixture
def serve() -> Iterator[Callable[..., Fake]]:
    servers: list[RunningServer] = []

    def start(folders: list[FakeFolder], **options: object) -> Fake:
        app = make_dropbox_app(folders, **options)  # type: ignore[arg-type]
        server = RunningServer(app)
        servers.append(server)
        return Fake(server, app.state.dropbox)

    yield start
    for server in servers:
        server.stop()


def read(source: DropboxApiSource, file: RemoteFile) -> bytes:
    with source.open(file) as chunks:
        return b"".join(chunks)


def test_lists_the_sample_folder_recursively(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root], page_size=5)
    with fake.source(tmp_path, root) as source:
        listed = list(source.list())
    expected = {path: node for path, node in root.files()}
    assert [f.path for f in listed] == list(expected)  # depth-first, in listing order
    for file in listed:
        node = expected[file.path]
        assert file.name == node.name
        assert file.size == node.length
        assert file.id == f"id:{node.id}"
        assert file.checksum == f"dropbox:{content_hash(node)}"
    assert "../escape.jpg" in expected and "sub/deeper/deep.jpg" in expected
    # Subfolders are walked with the same shared link; recursive=True is never asked for.
    link = f"https://www.dropbox.com/scl/fo/{root.id}/"
    calls = fake.state.route_calls(LIST)
    assert [c["path"] for c in calls] == ["", "/sub", "/sub/deeper"]
    assert all(c["shared_link"]["url"].startswith(link) for c in calls)
    assert all(not c.get("recursive") for c in calls)
    assert fake.state.route_calls(CONTINUE)  # page_size=5 forced continues


def test_fake_content_hash_matches_the_sdk_algorithm() -> None:
    for size in (10, 4 * 1024 * 1024, 9 * 1024 * 1024 + 7):
        file = FakeFile("x", b"head", size=size)
        assert content_hash(file) == sdk_content_hash(file.read())


def test_downloaded_bytes_equal_the_files(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    expected = dict(root.files())
    with fake.source(tmp_path, root) as source:
        for file in source.list():
            assert read(source, file) == expected[file.path].read(), file.path
    downloads = fake.state.route_calls(DOWNLOAD)
    assert {d["path"] for d in downloads} == {f"/{p}" for p in expected}


def test_big_folder_is_paginated_and_streamed(serve: Callable[..., Fake], tmp_path: Path) -> None:
    folder = big_folder(2500)
    fake = serve([folder], page_size=500)
    with fake.source(tmp_path, folder) as source:
        listing = source.list()
        first = next(listing)
        # The first page is handed out before the next one is asked for.
        assert first.path == "img-000000.jpg"
        assert len(fake.state.route_calls(CONTINUE)) == 0
        rest = list(listing)
    assert len(rest) + 1 == 2500
    assert len({f.id for f in rest} | {first.id}) == 2500
    assert len(fake.state.route_calls(CONTINUE)) == 4


def test_access_token_is_refreshed(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    with fake.source(tmp_path, root) as source:
        files = list(source.list())
        assert fake.state.token_requests == 1
        fake.state.expire_tokens()
        red = next(f for f in files if f.path == "red.jpg")
        assert read(source, red) == dict(root.files())["red.jpg"].read()
        assert fake.state.token_requests == 2


def test_rate_limits_and_server_errors_are_retried(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    root, _ = sample_folder()
    plan = FaultPlan(
        [
            Fault("429", path="/2/files/list_folder", times=1, retry_after=1),
            Fault("500", path="/2/files/list_folder", times=1),
            Fault("500", path="/2/files/list_folder/continue", times=2),
            Fault("429", path="/2/sharing/get_shared_link_file", times=1, retry_after=1),
            Fault("500", path="/2/sharing/get_shared_link_file", times=1),
            Fault("500", path="/oauth2/token", times=1),
        ]
    )
    fake = serve([root], page_size=4, faults=plan)
    with fake.source(tmp_path, root) as source:
        files = list(source.list())
        assert len(files) == len(root.files())
        blue = next(f for f in files if f.path == "blue.png")
        assert read(source, blue) == dict(root.files())["blue.png"].read()
    # Every injected fault really happened (each answers once per path).
    assert sum(plan.seen.values()) == 1 + 1 + 2 + 1 + 1 + 1


def test_retries_give_up_with_a_transient_error(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    plan = FaultPlan([Fault("500", path="/2/files/list_folder", times=100)])
    fake = serve([root], faults=plan)
    with (
        fake.source(tmp_path, root, source_retry_attempts=3) as source,
        pytest.raises(TransientError),
    ):
        list(source.list())
    assert len(fake.state.route_calls(LIST)) == 0  # the faults answered before the route
    assert sum(plan.seen.values()) == 3


def test_a_connection_dropped_mid_file_is_transient(
    serve: Callable[..., Fake], tmp_path: Path
) -> None:
    root, _ = sample_folder()
    plan = FaultPlan()
    fake = serve([root], faults=plan)
    with fake.source(tmp_path, root) as source:
        huge = next(f for f in source.list() if f.path == "huge.jpg")
        plan.add(Fault("drop", path="/2/sharing/get_shared_link_file", times=1))
        with pytest.raises(TransientError, match="broke off"), source.open(huge) as chunks:
            for _ in chunks:
                pass
        assert read(source, huge) == dict(root.files())["huge.jpg"].read()


def test_missing_link_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    gone = FakeFolder("removed meanwhile")
    fake = serve([root])
    with fake.source(tmp_path, gone) as source, pytest.raises(SourceUnavailable) as raised:
        list(source.list())
    assert "could not find" in str(raised.value)


def test_private_folder_is_unavailable(serve: Callable[..., Fake], tmp_path: Path) -> None:
    secret = FakeFolder("secret", [FakeFile("a.jpg", b"x")], public=False)
    fake = serve([secret])
    with fake.source(tmp_path, secret) as source, pytest.raises(SourceUnavailable) as raised:
        list(source.list())
    assert "not public" in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dropbox_app_secret": "wrong-s3cr3t-value"},
        {"dropbox_app_key": "wrong-k3y-value"},
        {"dropbox_refresh_token": "wrong-r3fresh-value"},
    ],
)
def test_rejected_credentials_are_unavailable_without_leaking_them(
    serve: Callable[..., Fake], tmp_path: Path, overrides: dict[str, str]
) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    with (
        fake.source(tmp_path, root, **overrides) as source,
        pytest.raises(SourceUnavailable) as raised,
    ):
        list(source.list())
    message = str(raised.value)
    assert "rejected" in message and "credentials" in message
    for value in [*overrides.values(), "app-secret", "refresh-token"]:
        assert value not in message
    assert fake.state.token_requests == 1  # not retried: it will not get better


def test_a_file_that_vanished_is_an_item_error(serve: Callable[..., Fake], tmp_path: Path) -> None:
    root, _ = sample_folder()
    fake = serve([root])
    with fake.source(tmp_path, root) as source:
        files = list(source.list())
        notes = next(f for f in files if f.path == "notes.txt")
        root.children = [c for c in root.children if c.name != "notes.txt"]
        with pytest.raises(ItemError, match="deleted or is no longer shared"):
            read(source, notes)
        # The rest of the folder is still readable.
        blue = next(f for f in files if f.path == "blue.png")
        assert read(source, blue)


def test_open_works_from_a_rebuilt_remote_file(serve: Callable[..., Fake], tmp_path: Path) -> None:
    """`open` may run in another process from a RemoteFile rebuilt from stored JSON."""
    root, _ = sample_folder()
    fake = serve([root])
    with fake.source(tmp_path, root) as lister:
        deep = next(f for f in lister.list() if f.path == "sub/deeper/deep.jpg")
    rebuilt = RemoteFile(
        id=deep.id, name=deep.name, path=deep.path, size=deep.size, extra=dict(deep.extra)
    )
    with fake.source(tmp_path, root) as other:
        assert read(other, rebuilt) == dict(root.files())["sub/deeper/deep.jpg"].read()
