"""Which listed files are as an earlier import of their folder found them: those are settled
at once with the image stored then, without a download (item state `unchanged`).

A file is unchanged when the source reports the checksum recorded then (Drive's MD5,
Dropbox's content hash); where it reports none, when its size and modification time both
are the ones recorded then (a ZIP entry). Drive's public pages report neither: their files
are downloaded again, and found duplicates when their bytes are stored already."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from imageimport import db
from imageimport.db.models import Import
from imageimport.sources.base import RemoteFile


def unchanged_files(
    session: db.Session, record: Import, files: Sequence[RemoteFile]
) -> dict[str, int]:
    """The listed files that are unchanged, by remote id, each with the image it matched."""
    listed = [file for file in files if file.refused is None]
    stored = db.stored_versions(
        session, record.provider, record.folder_id, [file.id for file in listed]
    )
    return {
        file.id: version.image_id
        for file in listed
        if (version := stored.get(file.id)) is not None and is_unchanged(file, version)
    }


class Recorded(Protocol):
    """A file as it was recorded: a `db.StoredVersion`, or a `db.RecordedFile` of its import."""

    @property
    def checksum(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def modified(self) -> datetime | None: ...


def is_unchanged(file: RemoteFile, recorded: Recorded) -> bool:
    if file.checksum is not None or recorded.checksum is not None:
        return file.checksum == recorded.checksum
    return (
        file.size is not None
        and file.modified is not None
        and (file.size, file.modified) == (recorded.size, recorded.modified)
    )
