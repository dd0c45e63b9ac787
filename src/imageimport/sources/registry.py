"""The provider for a link: every link a user pastes is checked, then offered to each provider
in `imageimport.sources.all` until one claims it."""

from __future__ import annotations

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.all import PROVIDERS
from imageimport.sources.base import FolderRef, Provider, Source, refuse_link_tricks, shorten
from imageimport.sources.budget import SlotBook

_providers: dict[str, Provider] = {provider.name: provider for provider in PROVIDERS}


def parse_folder_url(url: str) -> FolderRef:
    """Parse any folder link a user may paste; a clear InvalidSourceURL otherwise."""
    text = (url or "").strip()
    if not text:
        raise InvalidSourceURL("The folder URL is empty.")
    if len(text) > 2048:
        raise InvalidSourceURL("The folder URL is longer than 2048 characters.")
    refuse_link_tricks(text)
    for provider in _providers.values():
        try:
            ref = provider.parse(text)
        except ValueError as error:  # urlsplit refuses some garbage, e.g. "http://[::1"
            raise InvalidSourceURL(f"{shorten(text)!r} is not a valid URL.") from error
        if ref is not None:
            return ref
    raise InvalidSourceURL(
        f"{shorten(text)!r} is not a Google Drive folder link (https://drive.google.com/"
        "drive/folders/...) or a Dropbox shared folder link (https://www.dropbox.com/scl/fo/...)."
    )


def open_source(
    url_or_ref: str | FolderRef, settings: Settings, slots: SlotBook | None = None
) -> Source:
    """`slots`: where the installation keeps its request budgets (this process's memory when
    None; see sources.budget)."""
    ref = url_or_ref if isinstance(url_or_ref, FolderRef) else parse_folder_url(url_or_ref)
    return _providers[ref.provider].open(ref, settings, slots)
