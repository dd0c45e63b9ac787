"""Offline stand-ins for Google Drive and Dropbox that speak their real wire formats."""
