"""Google Drive: which links are folder links (`links`), and which route lists them.

Two routes read a public ("Anyone with the link") folder:
- `api.DriveApiSource`, the Drive API v3 with an API key (GOOGLE_API_KEY): exact sizes,
  checksums, shortcuts and pagination; used whenever a key is configured.
- `public.DrivePublicSource`, Drive's public web pages, the way tools like gdown work
  without a key; used automatically otherwise (see that module for its limits).
"""

from __future__ import annotations

from imageimport.settings import Settings, secret
from imageimport.sources.base import FolderRef, Source
from imageimport.sources.budget import SlotBook
from imageimport.sources.gdrive.common import PROVIDER
from imageimport.sources.gdrive.links import parse_drive_url


class GoogleDriveProvider:
    name = PROVIDER

    def parse(self, url: str) -> FolderRef | None:
        return parse_drive_url(url)

    def open(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> Source:
        # Imported when first needed: the API route's googleapiclient alone takes a quarter
        # of a second to import, which every command would pay otherwise.
        if secret(settings.google_api_key):
            from imageimport.sources.gdrive.api import DriveApiSource

            return DriveApiSource(ref, settings, slots)
        from imageimport.sources.gdrive.public import DrivePublicSource

        return DrivePublicSource(ref, settings, slots)


provider = GoogleDriveProvider()
