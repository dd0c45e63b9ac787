"""Every folder link form users paste, and the Drive links that are not folder links."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.gdrive import GoogleDriveProvider
from imageimport.sources.gdrive.api import DriveApiSource
from imageimport.sources.gdrive.links import parse_drive_url
from imageimport.sources.gdrive.public import DrivePublicSource
from imageimport.sources.registry import open_source, parse_folder_url

ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"  # 33 characters, like a real folder id
OLD_ID = "0B8Ycj67zPk24QzV2b2tfaDVOZlU"  # the older 28-character form
SHARED_DRIVE_ID = "0ANq_mzZTq_HeUk9PVA"  # shared drive roots have 19 characters
KEY = "0-AbC_dEf-123"
CANONICAL = f"https://drive.google.com/drive/folders/{ID}"


@pytest.mark.parametrize(
    ("url", "folder_id", "resource_key"),
    [
        (f"https://drive.google.com/drive/folders/{ID}", ID, None),
        (f"https://drive.google.com/drive/folders/{ID}/", ID, None),
        (f"https://drive.google.com/drive/folders/{ID}?usp=sharing", ID, None),
        (f"https://drive.google.com/drive/folders/{ID}?usp=drive_link", ID, None),
        (f"https://drive.google.com/drive/folders/{ID}#grid", ID, None),
        (f"https://drive.google.com/drive/u/0/folders/{ID}", ID, None),
        (f"https://drive.google.com/drive/u/3/folders/{ID}?usp=sharing", ID, None),
        (f"https://drive.google.com/drive/mobile/folders/{ID}", ID, None),
        (f"https://drive.google.com/drive/folders/{ID}?resourcekey={KEY}", ID, KEY),
        (f"https://drive.google.com/drive/folders/{ID}?usp=sharing&resourcekey={KEY}", ID, KEY),
        (f"https://drive.google.com/open?id={ID}", ID, None),
        (f"https://drive.google.com/open?id={ID}&resourcekey={KEY}", ID, KEY),
        (f"https://drive.google.com/folderview?id={ID}", ID, None),
        (f"https://drive.google.com/embeddedfolderview?id={ID}#list", ID, None),
        (f"drive.google.com/drive/folders/{ID}", ID, None),
        (f"http://drive.google.com/drive/folders/{ID}", ID, None),
        (f"HTTPS://DRIVE.GOOGLE.COM/drive/folders/{ID}", ID, None),
        (f"  <https://drive.google.com/drive/folders/{ID}>  ", ID, None),
        (f"https://drive.google.com/drive/folders/{OLD_ID}", OLD_ID, None),
        (f"https://drive.google.com/drive/folders/{SHARED_DRIVE_ID}", SHARED_DRIVE_ID, None),
        (ID, ID, None),
        (OLD_ID, OLD_ID, None),
        (SHARED_DRIVE_ID, SHARED_DRIVE_ID, None),
    ],
)
def test_folder_link_forms_are_accepted(url: str, folder_id: str, resource_key: str | None) -> None:
    ref = parse_drive_url(url)
    assert ref is not None
    assert ref.provider == "gdrive"
    assert ref.folder_id == folder_id
    assert ref.resource_key == resource_key
    expected = f"https://drive.google.com/drive/folders/{folder_id}"
    assert ref.url == (f"{expected}?resourcekey={resource_key}" if resource_key else expected)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"https://drive.google.com/file/d/{ID}/view?usp=sharing", "single file, not a folder"),
        (f"https://drive.google.com/file/d/{ID}/view", "single file, not a folder"),
        (f"https://drive.google.com/uc?id={ID}&export=download", "single file, not a folder"),
        (f"https://drive.usercontent.google.com/download?id={ID}", "single file, not a Google"),
        (f"https://docs.google.com/document/d/{ID}/edit", "Google Docs document, not a folder"),
        (f"https://docs.google.com/spreadsheets/d/{ID}/edit#gid=0", "Google Sheets"),
        (f"https://docs.google.com/presentation/d/{ID}/edit", "Google Slides"),
        ("https://drive.google.com/drive/folders/abc", "not contain a valid Google Drive folder"),
        ("https://drive.google.com/drive/folders/", "not contain a valid Google Drive folder"),
        (
            "https://drive.google.com/drive/folders/1AbC$%25def%20ghijklmnop",
            "not contain a valid Google Drive folder",
        ),
        ("https://drive.google.com/open", "has no folder id"),
        ("https://drive.google.com/drive/my-drive", "your own Google Drive"),
        ("https://drive.google.com/drive/u/0/shared-with-me", "your own Google Drive"),
        ("https://drive.google.com/", "not a folder link"),
        (f"https://drive.google.com/drive/folders/{ID}?resourcekey=a%20b", "resourcekey"),
    ],
)
def test_drive_links_that_are_not_folders_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidSourceURL) as caught:
        parse_drive_url(url)
    assert message in str(caught.value)
    assert str(caught.value).endswith(".")  # a whole sentence, not a fragment


@pytest.mark.parametrize(
    "url",
    [
        "hello",
        "helloworldhelloworld",  # long enough, but a word: no digits
        "12345678901234567890",  # digits only
        "https://www.dropbox.com/scl/fo/abc123/xyz?rlkey=k&dl=0",
        f"https://example.com/drive/folders/{ID}",
        f"https://drive.google.com.evil.example/drive/folders/{ID}",
        f"ftp://drive.google.com/drive/folders/{ID}",
        "",
    ],
)
def test_other_text_is_not_claimed(url: str) -> None:
    assert parse_drive_url(url) is None


def test_the_registry_routes_drive_links_here() -> None:
    ref = parse_folder_url(f"https://drive.google.com/drive/u/1/folders/{ID}?usp=sharing")
    assert (ref.provider, ref.folder_id, ref.url) == ("gdrive", ID, CANONICAL)
    with pytest.raises(InvalidSourceURL, match="single file"):
        parse_folder_url(f"https://drive.google.com/file/d/{ID}/view")


def test_the_route_depends_on_whether_an_api_key_is_configured(tmp_path: Path) -> None:
    ref = GoogleDriveProvider().parse(CANONICAL)
    assert ref is not None
    with open_source(ref, Settings(data_dir=tmp_path, google_api_key="k")) as source:
        assert isinstance(source, DriveApiSource)
    with open_source(ref, Settings(data_dir=tmp_path, google_api_key=None)) as source:
        assert isinstance(source, DrivePublicSource)
