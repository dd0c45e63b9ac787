"""Dropbox shared folders: which links we accept (`links`), and which route imports them.

With app credentials the official API lists and downloads file by file (`api`); without
them the public "download as ZIP" link is used (`zip`).
"""

from __future__ import annotations

import logging

from imageimport.settings import Settings, secret
from imageimport.sources.base import FolderRef, Source
from imageimport.sources.budget import SlotBook
from imageimport.sources.dropbox.links import parse_dropbox_url

log = logging.getLogger(__name__)


class DropboxProvider:
    name = "dropbox"

    def parse(self, url: str) -> FolderRef | None:
        return parse_dropbox_url(url)

    def open(self, ref: FolderRef, settings: Settings, slots: SlotBook | None = None) -> Source:
        credentials = (
            secret(settings.dropbox_app_key),
            secret(settings.dropbox_app_secret),
            secret(settings.dropbox_refresh_token),
        )
        # Imported when first needed: the Dropbox SDK alone takes a third of a second to
        # import, which every command would pay otherwise.
        if all(credentials):
            from imageimport.sources.dropbox.api import DropboxApiSource

            return DropboxApiSource(ref, settings, slots)
        if any(credentials):
            log.warning(
                "Only some of DROPBOX_APP_KEY, DROPBOX_APP_SECRET and DROPBOX_REFRESH_TOKEN "
                "are set; the Dropbox API needs all three, so the public ZIP download is used."
            )
        from imageimport.sources.dropbox.zip import DropboxZipSource

        return DropboxZipSource(ref, settings, slots)


provider = DropboxProvider()
