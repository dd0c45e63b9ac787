"""Import images from public Google Drive and Dropbox folders into object storage."""

__version__ = "0.1.0"
