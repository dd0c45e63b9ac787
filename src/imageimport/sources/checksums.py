"""The checksums sources give for their files, and each download checked against its own as the
bytes stream in.

A listed file's checksum is `<kind>:<hex digest>` (`RemoteFile.checksum`, kept in
`import_items.checksum`). Each route declares which kinds its listing gives
(`Source.checksums`), as rclone's backends declare the hash types they support: Drive's API
route gives `md5Checksum`, Dropbox's API route `content_hash`; Drive's public pages give none,
and Dropbox's ZIP route none either (zipfile checks each entry's CRC-32 instead). A file with
no checksum, or one of a kind its route does not declare, is not checked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Protocol

from imageimport.errors import TransientError

MD5 = "md5"
DROPBOX_CONTENT_HASH = "dropbox"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def dropbox_content_hasher() -> Hasher:
    """Dropbox's content_hash (https://www.dropbox.com/developers/reference/content-hash): the
    file cut into blocks of 4 MiB (the last one may be shorter), the SHA-256 of each block,
    and the SHA-256 of those digests put end to end, in hex. The Dropbox SDK ships Dropbox's
    own reference code for it (github.com/dropbox/dropbox-api-content-hasher); imported when
    first needed, as the SDK is (sources.dropbox), since the package takes a third of a second
    to import and only the Dropbox API route gives such checksums."""
    from dropbox.content_hash import DropboxContentHasher

    hasher: Hasher = DropboxContentHasher()
    return hasher


# kind -> (its name in messages, a fresh hasher, the digest's length in hex digits)
_KINDS: dict[str, tuple[str, Callable[[], Hasher], int]] = {
    MD5: ("md5", hashlib.md5, 32),
    DROPBOX_CONTENT_HASH: ("content_hash", dropbox_content_hasher, 64),
}
_HEX = re.compile("[0-9a-f]+")


class ChecksumMismatch(TransientError):
    """The bytes that arrived are not the file's: retried like a dropped connection, since
    a new download usually brings the right ones; the file fails after its last attempt."""


class Verifier:
    """Hashes a download as it arrives and compares the result with the source's checksum."""

    def __init__(self, kind: str, expected: str, service: str, path: str) -> None:
        name, make, _ = _KINDS[kind]
        self._kind = kind
        self._name = name
        self._hasher = make()
        self._expected = expected
        self._service = service
        self._path = path

    def update(self, chunk: bytes) -> None:
        self._hasher.update(chunk)

    def verify(self, checksum_now: Callable[[], str | None]) -> str:
        """The checksum the bytes have (`<kind>:<hex digest>`) when it is the listed one, or
        the one the source gives now (`checksum_now`, asked only then: the file changed after
        it was listed); ChecksumMismatch otherwise."""
        got = self._hasher.hexdigest()
        if got == self._expected:
            return f"{self._kind}:{got}"
        now = checksum_now()
        if now is None or now.lower() != f"{self._kind}:{got}":
            raise ChecksumMismatch(
                f"The bytes downloaded for {self._path!r} do not match the checksum "
                f"{self._service} gives for this file ({self._name} {self._expected}, the bytes "
                f"have {got}): they were damaged on the way, or the file changed after it was "
                "listed."
            )
        return f"{self._kind}:{got}"


def verifier(checksum: str | None, declared: Mapping[str, str], path: str) -> Verifier | None:
    """What checks a download of the file at `path` whose listing gave `checksum`, None when
    nothing is checked. `declared` is the route's `Source.checksums` (kind -> the service
    that gives it, as messages name it). A checksum that is not a well-formed digest of its
    kind is not used: the source said nothing that could be checked."""
    kind, _, value = (checksum or "").partition(":")
    if kind not in declared or kind not in _KINDS:
        return None
    value = value.lower()
    if len(value) != _KINDS[kind][2] or not _HEX.fullmatch(value):
        return None
    return Verifier(kind, value, declared[kind], path)
