"""The listing bounds on their own: shortened names and paths, refused ids, the budget's
counts and its check for a page token seen twice. The whole routes are in
tests/security/test_hostile_listings.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from imageimport.db.models import Image, Import, ImportItem
from imageimport.errors import ListingLimit
from imageimport.settings import Settings
from imageimport.sources.base import MAX_LINK_ID_CHARS, RemoteFile
from imageimport.sources.listing import (
    MAX_EXTRA_CHARS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_PATH_CHARS,
    ListingBudget,
    SeenIds,
    bounded,
    bounded_listing,
    join_path,
    shorten,
)


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **overrides)  # type: ignore[call-arg]


def test_shorten_keeps_both_ends() -> None:
    assert shorten("short", 10) == "short"
    cut = shorten("abcdefghijklmnopqrstuvwxyz", 11)
    assert cut == "abcde…vwxyz" and len(cut) == 11


def test_paths_stay_bounded_however_deep_and_keep_the_whole_name() -> None:
    path = ""
    for level in range(200):
        path = join_path(path, f"{level:03d}" + "d" * 5000)
    name = "n" * 300 + ".jpg"
    path = join_path(path, name)
    assert len(path) == MAX_PATH_CHARS
    assert path.startswith("000ddd") and path.endswith("/" + shorten(name, MAX_NAME_CHARS))
    assert join_path("", "top.jpg") == "top.jpg"
    assert join_path("a/b", "c.jpg") == "a/b/c.jpg"


def test_bounded_shortens_display_and_refuses_what_a_source_needs_whole() -> None:
    long_name = "x" * 1000 + ".jpg"
    file = bounded(RemoteFile(id="abc", name=long_name, path="dir/" + long_name))
    assert len(file.name) == MAX_NAME_CHARS and file.name.endswith(".jpg")
    assert file.refused is None and file.id == "abc"

    kept = RemoteFile(id="k" * MAX_ID_CHARS, name="a.jpg", path="a.jpg")
    assert bounded(kept) is kept

    refused = bounded(RemoteFile(id="i" * 2000, name="a.jpg", path="a.jpg"))
    assert refused.refused == (
        f"Not imported: its id is 2,000 characters long, more than the {MAX_ID_CHARS} accepted."
    )
    assert refused.id.startswith("refused:") and len(refused.id) < 100
    # Stable: listing again finds the same item.
    assert bounded(RemoteFile(id="i" * 2000, name="b.jpg", path="b.jpg")).id == refused.id

    bulky = bounded(RemoteFile(id="x", name="a", path="a", extra={"k": "v" * MAX_EXTRA_CHARS}))
    assert bulky.refused and "characters of data" in bulky.refused


def test_bounded_listing_stops_after_the_file_limit(tmp_path: Path) -> None:
    files = (RemoteFile(id=str(n), name=f"{n}.jpg", path=f"{n}.jpg") for n in range(10))
    listing = bounded_listing(files, settings(tmp_path, listing_max_files=3))
    assert [f.id for f in (next(listing), next(listing), next(listing))] == ["0", "1", "2"]
    with pytest.raises(ListingLimit, match="LISTING_MAX_FILES"):
        next(listing)


def test_the_budget_counts_folders_and_pages(tmp_path: Path) -> None:
    budget = ListingBudget(settings(tmp_path, listing_max_folders=2, listing_max_pages=3), "X")
    budget.folder()
    budget.folder()
    with pytest.raises(ListingLimit, match="LISTING_MAX_FOLDERS"):
        budget.folder()
    budget.page("a", None, "'a'")
    budget.page("a", "t1", "'a'")
    budget.page("b", None, "'b'")
    with pytest.raises(ListingLimit, match="LISTING_MAX_PAGES"):
        budget.page("b", "t1", "'b'")


def test_a_page_token_seen_twice_in_one_folder_stops_at_once(tmp_path: Path) -> None:
    budget = ListingBudget(settings(tmp_path), "Dropbox")
    budget.page("a", None, "'a'")
    budget.page("a", "t1", "'a'")
    budget.page("a", "t2", "'a'")
    budget.page("b", "t1", "'b'")  # another folder may use the same token
    with pytest.raises(ListingLimit, match="Dropbox answered the same page token twice"):
        budget.page("b", "t1", "'b'")


def test_the_budget_stops_when_time_is_up(tmp_path: Path) -> None:
    budget = ListingBudget(settings(tmp_path, listing_max_seconds=0.01), "X")
    budget.page("a", None, "'a'")
    time.sleep(0.05)
    with pytest.raises(ListingLimit, match="LISTING_MAX_SECONDS"):
        budget.page("a", "t", "'a'")


def test_seen_ids() -> None:
    seen = SeenIds("a")
    assert not seen.add("a")
    assert seen.add("b") and not seen.add("b")


def test_every_accepted_value_fits_its_column() -> None:
    def length(column: object) -> int:
        return int(column.type.length)  # type: ignore[attr-defined]

    assert length(ImportItem.__table__.c.remote_id) >= MAX_ID_CHARS
    assert length(Image.__table__.c.source_file_id) >= MAX_ID_CHARS
    assert length(Import.__table__.c.folder_id) >= MAX_LINK_ID_CHARS
