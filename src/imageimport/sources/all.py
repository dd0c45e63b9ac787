"""Every provider, as rclone's backend/all: adding one (OneDrive, an S3 bucket…) is a package
under sources/ whose `provider` parses its links and opens its `Source`, and its line here."""

from __future__ import annotations

from imageimport.sources import dropbox, gdrive
from imageimport.sources.base import Provider

# In the order links are offered to them.
PROVIDERS: tuple[Provider, ...] = (dropbox.provider, gdrive.provider)
