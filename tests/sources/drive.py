"""What the tests of both Google Drive routes share: a folder reference, settings pointing at
the fake Drive, the fake's state and reading a file whole."""

from __future__ import annotations

from pathlib import Path

from imageimport.settings import Settings
from imageimport.sources.base import FolderRef, RemoteFile, Source
from imageimport.sources.gdrive.links import canonical_folder_url
from tests.fakes.folder import FakeFolder
from tests.fakes.gdrive import FakeDrive
from tests.fakes.server import RunningServer


def ref_for(folder: FakeFolder | str, resource_key: str | None = None) -> FolderRef:
    folder_id = folder if isinstance(folder, str) else folder.id
    return FolderRef("gdrive", folder_id, canonical_folder_url(folder_id), resource_key)


def drive_settings(
    server: RunningServer, tmp_path: Path, *, google_api_key: str | None, retry_attempts: int
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        google_api_key=google_api_key,
        gdrive_api_url=server.url,
        gdrive_web_url=server.url,
        gdrive_download_url=server.url,
        source_retry_attempts=retry_attempts,
        source_retry_max_wait_seconds=0.05,
    )


def drive_of(server: RunningServer) -> FakeDrive:
    return server.app.app.state.drive  # type: ignore[attr-defined]


def read(source: Source, file: RemoteFile) -> bytes:
    with source.open(file) as chunks:
        return b"".join(chunks)
