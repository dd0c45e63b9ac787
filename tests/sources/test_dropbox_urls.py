"""Which Dropbox links are accepted, how they are normalised, and what rejections say."""

from __future__ import annotations

import pytest

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.dropbox import provider
from imageimport.sources.dropbox.api import DropboxApiSource
from imageimport.sources.dropbox.links import with_web_base
from imageimport.sources.dropbox.zip import DropboxZipSource

FOLDER = "abc123XYZ_-"
KEY = "AAB-Cd_ef12"
RLKEY = "q8wz1k2x3y4v5u6t7s8r9p0on"
CANONICAL = f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}"


@pytest.mark.parametrize(
    "url",
    [
        f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=0",
        f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=1",
        f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&st=ab12cd34&dl=0",
        f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?dl=0&rlkey={RLKEY}&e=1",
        f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}/?rlkey={RLKEY}",
        f"https://dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=0",
        f"http://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}",
        f"https://dl.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=1",
        f"www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=0",
        f"dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}",
        f"  https://WWW.Dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=0  ",
    ],
)
def test_shared_folder_links_are_normalised(url: str) -> None:
    ref = provider.parse(url)
    assert ref is not None
    assert ref.provider == "dropbox"
    assert ref.folder_id == FOLDER
    assert ref.url == CANONICAL
    assert ref.resource_key == RLKEY


@pytest.mark.parametrize(
    "url",
    [
        f"https://www.dropbox.com/sh/{FOLDER}/{KEY}?dl=0",
        f"dropbox.com/sh/{FOLDER}/{KEY}",
        f"https://www.dropbox.com/sh/{FOLDER}/{KEY}?dl=1&st=xyz",
    ],
)
def test_legacy_folder_links_are_normalised(url: str) -> None:
    ref = provider.parse(url)
    assert ref is not None
    assert ref.folder_id == FOLDER
    assert ref.url == f"https://www.dropbox.com/sh/{FOLDER}/{KEY}"


@pytest.mark.parametrize(
    ("url", "phrases"),
    [
        (
            "https://www.dropbox.com/scl/fi/abc123/photo.jpg?rlkey=xyz&dl=0",
            ["single file", "not a folder"],
        ),
        ("https://www.dropbox.com/s/abc123/photo.jpg?dl=0", ["single file"]),
        (f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?dl=0", ["incomplete", "rlkey"]),
        (f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey=&dl=0", ["incomplete", "rlkey"]),
        (f"https://www.dropbox.com/scl/fo/{FOLDER}?rlkey={RLKEY}", ["incomplete"]),
        (f"https://www.dropbox.com/sh/{FOLDER}", ["incomplete"]),
        (f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}/sub?rlkey={RLKEY}", ["inside"]),
        (f"https://www.dropbox.com/sh/{FOLDER}/{KEY}/photo.jpg?dl=0", ["inside"]),
        ("https://www.dropbox.com/home", ["Dropbox page", "Copy link"]),
        ("https://www.dropbox.com/home/Photos", ["Dropbox page"]),
        ("https://www.dropbox.com/", ["Dropbox page"]),
        ("https://paper.dropbox.com/doc/xyz", ["Dropbox page"]),
        (f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey=x%22%3Cscript", ["characters"]),
        ("https://dl.dropboxusercontent.com/s/abc/photo.jpg", ["single Dropbox file"]),
    ],
)
def test_links_that_are_not_shared_folders_are_rejected_clearly(
    url: str, phrases: list[str]
) -> None:
    with pytest.raises(InvalidSourceURL) as raised:
        provider.parse(url)
    message = str(raised.value)
    for phrase in phrases:
        assert phrase in message
    assert message.endswith(".")


@pytest.mark.parametrize(
    "url",
    [
        "https://drive.google.com/drive/folders/1AbC",
        "https://example.com/scl/fo/a/b?rlkey=c",
        "https://dropbox.com.evil.example/scl/fo/a/b?rlkey=c",
        "https://notdropbox.com/scl/fo/a/b?rlkey=c",
        "ftp://www.dropbox.com/scl/fo/a/b?rlkey=c",
        "just some words",
        "http://[::1",
    ],
)
def test_other_urls_are_not_claimed(url: str) -> None:
    assert provider.parse(url) is None


def test_zip_link_uses_the_configured_web_endpoint() -> None:
    settings = Settings(dropbox_web_url="http://127.0.0.1:9999/")
    assert with_web_base(CANONICAL, settings) == (
        f"http://127.0.0.1:9999/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}"
    )


def test_credentials_choose_the_api_and_their_absence_the_zip() -> None:
    ref = provider.parse(CANONICAL)
    assert ref is not None
    full = Settings(dropbox_app_key="k", dropbox_app_secret="s", dropbox_refresh_token="r")
    partial = Settings(dropbox_app_key="k", dropbox_app_secret="s", dropbox_refresh_token=None)
    none = Settings(dropbox_app_key=None, dropbox_app_secret=None, dropbox_refresh_token=None)
    with provider.open(ref, full) as api:
        assert isinstance(api, DropboxApiSource)
    with provider.open(ref, partial) as zipped:
        assert isinstance(zipped, DropboxZipSource)
        assert zipped.local_only
    with provider.open(ref, none) as zipped:
        assert isinstance(zipped, DropboxZipSource)
