"""Where images come from: one `Source` interface, one module per provider."""

from imageimport.sources.base import (
    FolderRef,
    RemoteFile,
    Source,
    open_source,
    parse_folder_url,
    register,
)

__all__ = ["FolderRef", "RemoteFile", "Source", "open_source", "parse_folder_url", "register"]
