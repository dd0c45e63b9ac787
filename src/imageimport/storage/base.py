"""The one interface every object store implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from imageimport.tempfiles import TempFiles


class ObjectStore(ABC):
    """A flat key space of immutable objects. Keys are produced by `imageimport.keys`,
    never by users, but implementations still refuse keys that could escape their root."""

    name: str
    # Where this store writes partial objects on this machine, if anywhere.
    temp_files: TempFiles | None = None

    @abstractmethod
    def put_file(self, key: str, fileobj: BinaryIO, size: int, content_type: str) -> None:
        """Store `size` bytes read from `fileobj` (positioned at 0), streaming, atomically:
        a reader never sees a partial object. Overwriting a key is allowed."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        import io

        self.put_file(key, io.BytesIO(data), len(data), content_type)

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The stored size in bytes, None if the key does not exist."""

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """The object's content, streamed. KeyError if it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]: ...

    def presigned_url(self, key: str, expires_seconds: int = 300) -> str | None:
        """A short-lived URL a browser can GET, or None when the store has none (local)."""
        return None

    def remove_leftovers(self, max_age_seconds: float) -> int:
        """Remove what writers that died mid-write left in the store itself (beyond
        `temp_files`) once it is `max_age_seconds` old; may be slow or use the network. The
        number of things removed."""
        return 0

    @abstractmethod
    def check(self) -> None:
        """Raise if the store cannot be reached or written (readiness probes)."""
