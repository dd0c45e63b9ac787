"""The key-less route: Drive's embedded folder view and public download pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from imageimport.errors import ItemError, SourceUnavailable, TransientError
from imageimport.settings import Settings
from imageimport.sources.base import RemoteFile
from imageimport.sources.gdrive.public import (
    DrivePublicSource,
    parse_download_form,
    parse_folder_page,
)
from tests.fakes.folder import FakeFile, FakeFolder, make_image, sample_folder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import Fault, FaultPlan, RunningServer
from tests.sources.drive import drive_of, drive_settings, read, ref_for

# Shaped like captured embedded views: a file with thumbnail and list icon, a folder without
# a list icon, a Google Doc, and a title with HTML entities.
CAPTURED_PAGE = (
    '<html><head><title>Shared photos</title></head><body><div class="flip-entries">'
    '<div class="flip-entry" id="entry-1sGXmEHYYOFpQGFKQlwsQgMrwPvYvevxx" tabindex="0" '
    'role="link"><div class="flip-entry-info"><a href="https://drive.google.com/file/d/'
    '1sGXmEHYYOFpQGFKQlwsQgMrwPvYvevxx/view?usp=drive_web" target="_blank"><div '
    'class="flip-entry-visual"><div class="flip-entry-visual-card"><div class="flip-entry-thumb">'
    '<img src="https://lh3.googleusercontent.com/abc=s190" alt="JPEG Image"/></div></div></div>'
    '<div class="flip-entry-list-icon"><img src="https://drive-thirdparty.googleusercontent.com/'
    '16/type/image/jpeg" alt=""/></div><div class="flip-entry-title">IMG_0001.JPG</div></a></div>'
    '<div class="flip-entry-last-modified"><div>Sep 29</div></div></div>'
    '<div class="flip-entry" id="entry-1Fold-er_ID0123456789" tabindex="0" role="link"><div '
    'class="flip-entry-info"><a href="https://drive.google.com/drive/folders/1Fold-er_ID0123456789'
    '?resourcekey=0-kEy" target="_blank"><div class="flip-entry-visual"><div '
    'class="flip-entry-visual-card"><div class="flip-entry-icon"><img src="https://drive-'
    'thirdparty.googleusercontent.com/128/type/application/vnd.google-apps.folder" alt=""/></div>'
    '</div></div><div class="flip-entry-title">Wizardon&#39;s Mods &amp; Packs</div></a></div>'
    "</div>"
    '<div class="flip-entry" id="entry-1tUst5M0JZyYXQvD6CAwE_I6vzZog7j39GM6t65l7C-c" '
    'tabindex="0" role="link"><div class="flip-entry-info"><a href="https://docs.google.com/'
    'presentation/d/1tUst5M0JZyYXQvD6CAwE_I6vzZog7j39GM6t65l7C-c/edit?usp=drive_web" '
    'target="_blank"><div class="flip-entry-list-icon"><img src="https://ssl.gstatic.com/docs/'
    'doclist/images/icon_11_presentation_list.png" alt=""/></div><div class="flip-entry-title">'
    "Welcome</div></a></div></div></div></body></html>"
)
CAPTURED_FORM = (
    '<p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
    '<form id="download-form" action="https://drive.usercontent.google.com/download" '
    'method="get"><input type="submit" id="uc-download-link" value="Download anyway">'
    '<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" '
    'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
    'name="uuid" value="1234-uuid"></form>'
)


def settings_for(server: RunningServer, tmp_path: Path) -> Settings:
    return drive_settings(server, tmp_path, google_api_key=None, retry_attempts=4)


@pytest.fixture
def sample() -> Iterator[tuple[FakeFolder, RunningServer]]:
    tree, _ = sample_folder()
    with RunningServer(make_gdrive_app([tree], large_file_threshold=64 * 1024)) as server:
        yield tree, server


def test_parses_the_captured_page_structure() -> None:
    found_list, entries = parse_folder_page(CAPTURED_PAGE)
    assert found_list
    image, folder, slides = entries
    assert (image.item_id, image.title, image.is_folder) == (
        "1sGXmEHYYOFpQGFKQlwsQgMrwPvYvevxx",
        "IMG_0001.JPG",
        False,
    )
    assert image.icon_mime == "image/jpeg"
    assert (folder.item_id, folder.title, folder.is_folder) == (
        "1Fold-er_ID0123456789",
        "Wizardon's Mods & Packs",
        True,
    )
    assert folder.resource_key == "0-kEy"
    assert slides.is_docs_editors_file
    assert parse_folder_page("<html><body>Sign in to continue</body></html>") == (False, [])


def test_parses_the_captured_download_form() -> None:
    form = parse_download_form(CAPTURED_FORM)
    assert form is not None
    assert form.action == "https://drive.usercontent.google.com/download"
    assert form.method == "get"
    assert form.fields == {"id": "ABC", "export": "download", "confirm": "t", "uuid": "1234-uuid"}
    assert parse_download_form("<html><p>Quota exceeded</p></html>") is None


def test_lists_the_sample_folder_recursively(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    with DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        listed = {f.path: f for f in source.list()}
    expected = dict(tree.files())
    assert set(listed) == set(expected)
    assert {"sub/nested.gif", "sub/deeper/deep.jpg", "ünïcödé 写真.png"} <= set(listed)
    for path, fake in expected.items():
        assert listed[path].id == fake.id
        assert listed[path].name == fake.name
        assert listed[path].mime_type == fake.mime_type  # from the entry's icon
        assert listed[path].size is None and listed[path].checksum is None
    pages = drive_of(server).calls("/embeddedfolderview")
    assert len(pages) == 3  # the root, sub, sub/deeper
    assert all(not c.path.startswith("/drive/v3") for c in drive_of(server).requests)


def test_small_and_large_downloads_equal_the_files_bytes(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    expected = dict(tree.files())
    with DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        listed = {f.path: f for f in source.list()}
        assert read(source, listed["red.jpg"]) == expected["red.jpg"].content
        huge = expected["huge.jpg"]
        assert huge.length > 64 * 1024
        assert read(source, listed["huge.jpg"]) == huge.read()
    downloads = drive_of(server).calls("/download")
    small = [c for c in downloads if c.params["id"] == listed["red.jpg"].id]
    assert len(small) == 1
    # The large file first got the "can't scan for viruses" page, then the form was submitted.
    large = [c for c in downloads if c.params["id"] == huge.id]
    assert len(large) == 2
    assert "uuid" not in large[0].params
    assert large[1].params["uuid"] and large[1].params["confirm"] == "t"


def test_shortcuts_are_resolved_and_docs_skipped(tmp_path: Path) -> None:
    elsewhere_image = make_image(30, 20, seed=12)
    elsewhere = FakeFolder(
        "elsewhere",
        [
            FakeFile("target.jpg", elsewhere_image, "image/jpeg"),
            FakeFolder("linked", [FakeFile("in-linked.png", make_image(8, 8, "PNG"), "image/png")]),
        ],
    )
    target, linked = elsewhere.children
    loop = FakeFile("loop", id="1LoopShortcut00000000000000000000")
    tree = FakeFolder(
        "with shortcuts",
        [
            FakeFile("shortcut to target.jpg", shortcut_to=target.id),
            FakeFile("shortcut to linked", shortcut_to=linked.id),
            FakeFile("Notes", b"", "application/vnd.google-apps.document"),
            FakeFolder("sub", [loop]),
        ],
    )
    loop.shortcut_to = tree.id
    with (
        RunningServer(make_gdrive_app([tree, elsewhere])) as server,
        DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        listed = {f.path: f for f in source.list()}
        assert set(listed) == {"shortcut to target.jpg", "shortcut to linked/in-linked.png"}
        assert listed["shortcut to target.jpg"].id == target.id
        assert read(source, listed["shortcut to target.jpg"]) == elsewhere_image


def test_a_resource_key_is_passed_on(tmp_path: Path) -> None:
    image = make_image(12, 12, seed=2)
    tree = FakeFolder("keyed", [FakeFile("k.jpg", image, "image/jpeg")])
    keys = {tree.id: "0-folder", tree.children[0].id: "0-file"}
    with RunningServer(make_gdrive_app([tree], resource_keys=keys)) as server:
        settings = settings_for(server, tmp_path)
        with pytest.raises(SourceUnavailable, match="not shared publicly"):
            list(DrivePublicSource(ref_for(tree), settings).list())
        with DrivePublicSource(ref_for(tree, "0-folder"), settings) as source:
            (file,) = source.list()
            assert file.extra == {"resource_key": "0-file"}
            assert read(source, file) == image


def test_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    tree, _ = sample_folder()
    with RunningServer(make_gdrive_app([tree])) as server:
        ref = ref_for("1NoSuchFolder00000000000000000000")
        with pytest.raises(SourceUnavailable) as caught:
            list(DrivePublicSource(ref, settings_for(server, tmp_path)).list())
    assert str(caught.value) == (
        f"The Google Drive folder {ref.url} was not found or is not shared with "
        "'Anyone with the link'."
    )


def test_a_private_folder_asks_to_sign_in_and_is_unavailable(tmp_path: Path) -> None:
    tree = FakeFolder("private", [FakeFile("a.jpg", make_image(4, 4), "image/jpeg")], public=False)
    with RunningServer(make_gdrive_app([tree])) as server:
        with pytest.raises(SourceUnavailable) as caught:
            list(DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)).list())
        a_file = RemoteFile(tree.children[0].id, "a.jpg", "a.jpg")
        with (
            pytest.raises(ItemError, match="not shared publicly"),
            DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)).open(a_file) as c,
        ):
            b"".join(c)
    assert "is not shared publicly: Google asks to sign in" in str(caught.value)


def test_a_page_that_is_not_a_listing_is_an_error_not_an_empty_folder(tmp_path: Path) -> None:
    async def changed_page(request: object) -> HTMLResponse:
        return HTMLResponse("<html><body><div class='new-layout'>files...</div></body></html>")

    app = Starlette(routes=[Route("/embeddedfolderview", changed_page)])
    with RunningServer(app) as server:
        source = DrivePublicSource(
            ref_for("1Whatever0000000000000000"), settings_for(server, tmp_path)
        )
        with pytest.raises(SourceUnavailable, match="changed the page"):
            list(source.list())


def test_listing_and_downloading_survive_rate_limits_and_errors(tmp_path: Path) -> None:
    tree, _ = sample_folder()
    faults = FaultPlan(
        [
            Fault("429", path="/embeddedfolderview", times=2, retry_after=0.01),
            Fault("drop", path="/embeddedfolderview", times=1),
            Fault("500", path="/download", times=2),
        ]
    )
    with (
        RunningServer(make_gdrive_app([tree]), faults) as server,
        DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        listed = {f.path: f for f in source.list()}
        assert set(listed) == {p for p, _ in tree.files()}
        red = tree.children[0]
        assert isinstance(red, FakeFile)
        assert read(source, listed["red.jpg"]) == red.content
    assert sum(faults.seen.values()) == 5


def test_a_connection_dropped_mid_download_is_transient(
    sample: tuple[FakeFolder, RunningServer], tmp_path: Path
) -> None:
    tree, server = sample
    red = tree.children[0]
    assert isinstance(red, FakeFile)
    server.faults.add(Fault("drop", path="/download", times=1))
    remote = RemoteFile(red.id, red.name, red.name)
    with DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source:
        with pytest.raises(TransientError, match="dropped"), source.open(remote) as chunks:
            b"".join(chunks)
        assert read(source, remote) == red.content


def test_quota_and_deleted_files_fail_with_clear_messages(tmp_path: Path) -> None:
    tree, _ = sample_folder()
    red = tree.children[0]
    with (
        RunningServer(make_gdrive_app([tree], quota_exceeded={red.id})) as server,
        DrivePublicSource(ref_for(tree), settings_for(server, tmp_path)) as source,
    ):
        popular = RemoteFile(red.id, red.name, "red.jpg")
        with (
            pytest.raises(TransientError, match="too many users") as caught,
            source.open(popular) as chunks,
        ):
            b"".join(chunks)
        # A quota lasts hours: no quick retries now, the pipeline retries the item later.
        assert len(drive_of(server).calls("/download")) == 1
        assert caught.value.retry_after and caught.value.retry_after >= 60
        gone = RemoteFile("1DeletedFile00000000000000000000000", "gone.jpg", "gone.jpg")
        with pytest.raises(ItemError, match="deleted from Google Drive"), source.open(gone) as c:
            b"".join(c)
