"""The REST API (FastAPI) and the web page it serves."""

from __future__ import annotations

from imageimport.api.app import create_app

__all__ = ["create_app"]
