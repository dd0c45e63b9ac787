"""The one interface every source implements, and the registry that picks one for a URL.

Modelled on rclone's backends: a provider parses the URLs it owns and opens a `Source`;
adding a provider (OneDrive, an S3 bucket, ...) is one new module that calls `register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings

# The longest id or key a folder link may carry (imports.folder_id holds 255 characters); real
# Drive and Dropbox ones are under 50.
MAX_LINK_ID_CHARS = 200


@dataclass(frozen=True)
class FolderRef:
    """A parsed folder link: which provider, which folder, and the canonical URL."""

    provider: str
    folder_id: str
    url: str
    resource_key: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One file found while listing a folder."""

    id: str  # stable within the source: the same file has the same id in every listing
    name: str
    path: str  # "/"-joined path inside the shared folder, including the name
    size: int | None = None
    mime_type: str | None = None
    checksum: str | None = None  # "md5:<hex>" when the source reports one
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific data `open` needs
    # Why this file cannot be imported, as a sentence (e.g. its id is too long to store): it
    # is recorded as failed with this reason and never downloaded. See sources.listing.
    refused: str | None = None


class Source(ABC):
    """A listed folder. Implementations must be safe to `open` from many threads."""

    provider: ClassVar[str]
    # Set when a listed file is only readable in the process that listed it (e.g. a
    # downloaded archive); such sources re-list lazily in other processes.
    local_only: ClassVar[bool] = False

    def __init__(self, ref: FolderRef, settings: Settings) -> None:
        self.ref = ref
        self.settings = settings

    @abstractmethod
    def list(self) -> Iterator[RemoteFile]:
        """Every file under the folder, recursively, streamed as pages arrive."""

    @abstractmethod
    def open(self, file: RemoteFile) -> AbstractContextManager[Iterator[bytes]]:
        """The file's bytes as chunks; the caller enforces size limits while reading."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and temporary files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Provider(Protocol):
    name: str

    def parse(self, url: str) -> FolderRef | None:
        """The folder a URL points at, None if the URL is not this provider's.

        Raises InvalidSourceURL when the URL is this provider's but not a folder link.
        """

    def open(self, ref: FolderRef, settings: Settings) -> Source: ...


_providers: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    _providers[provider.name] = provider
    return provider


def providers() -> dict[str, Provider]:
    _load_builtin_providers()
    return dict(_providers)


def parse_folder_url(url: str) -> FolderRef:
    """Parse any folder link a user may paste; a clear InvalidSourceURL otherwise."""
    _load_builtin_providers()
    text = (url or "").strip()
    if not text:
        raise InvalidSourceURL("The folder URL is empty.")
    if len(text) > 2048:
        raise InvalidSourceURL("The folder URL is longer than 2048 characters.")
    _refuse_tricks(text)
    for provider in _providers.values():
        try:
            ref = provider.parse(text)
        except ValueError as error:  # urlsplit refuses some garbage, e.g. "http://[::1"
            raise InvalidSourceURL(f"{_shorten(text)!r} is not a valid URL.") from error
        if ref is not None:
            return ref
    raise InvalidSourceURL(
        f"{_shorten(text)!r} is not a Google Drive folder link (https://drive.google.com/"
        "drive/folders/...) or a Dropbox shared folder link (https://www.dropbox.com/scl/fo/...)."
    )


def _refuse_tricks(text: str) -> None:
    """Refuse what real folder links never contain but URL parsers disagree about, so that a
    link cannot look like one host to a person (or another parser) and another to us."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidSourceURL("The folder URL contains control characters (line breaks, tabs…).")
    shown = _shorten(text)
    if "\\" in text:
        raise InvalidSourceURL(f"{shown!r} contains a backslash, which folder links never have.")
    try:
        parts = urlsplit(text if "://" in text else "https://" + text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidSourceURL(f"{shown!r} is not a valid URL.") from None
    if "@" in parts.netloc:
        raise InvalidSourceURL(
            f"{shown!r} has a user name or password before its host (the part up to '@'); "
            "folder links never do. Paste the link exactly as the sharing dialog gives it."
        )


def open_source(url_or_ref: str | FolderRef, settings: Settings) -> Source:
    ref = url_or_ref if isinstance(url_or_ref, FolderRef) else parse_folder_url(url_or_ref)
    return providers()[ref.provider].open(ref, settings)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _load_builtin_providers() -> None:
    # Imported here, not at module top, because the provider modules import this one.
    from imageimport.sources import dropbox, gdrive  # noqa: F401
