"""The one interface every source implements, what a provider offers, and the checks every
pasted link passes before any provider sees it.

Modelled on rclone's backends: a provider parses the URLs it owns and opens a `Source`;
`imageimport.sources.registry` picks the provider for a link.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from imageimport.errors import InvalidSourceURL
from imageimport.settings import Settings
from imageimport.sources.budget import SlotBook, process_slot_book

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
    # When the file last changed, from sources that report no checksum but a time (a ZIP
    # entry's): with the size, it tells a re-import whether the file changed.
    modified: datetime | None = None
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
    # The checksum kinds this route's listing gives (RemoteFile.checksum), each mapped to the
    # service that gives it as messages name it: every download of a file with such a checksum
    # is checked against it (sources.checksums).
    checksums: ClassVar[Mapping[str, str]] = {}

    def __init__(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> None:
        """`slots`: where the request budgets of the installation are kept (see
        sources.budget); this process's memory when None."""
        self.ref = ref
        self.settings = settings
        self.slots = slots if slots is not None else process_slot_book()

    @abstractmethod
    def list(self) -> Iterator[RemoteFile]:
        """Every file under the folder, recursively, streamed as pages arrive."""

    @abstractmethod
    def open(self, file: RemoteFile) -> AbstractContextManager[Iterator[bytes]]:
        """The file's bytes as chunks; the caller enforces size limits while reading."""

    def checksum_now(self, file: RemoteFile) -> str | None:
        """The file's checksum as the source gives it now, None when the route cannot tell.
        Asked only when a download does not match the checksum the listing gave: a file that
        changed after it was listed (fixed at its source, then retried) has a new one."""
        return None

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

    def open(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> Source: ...


def refuse_link_tricks(text: str) -> None:
    """Refuse what real folder links never contain but URL parsers disagree about, so that a
    link cannot look like one host to a person (or another parser) and another to us."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidSourceURL("The folder URL contains control characters (line breaks, tabs…).")
    shown = shorten(text)
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


def shorten(text: str, limit: int = 120) -> str:
    """A link as quoted in an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
