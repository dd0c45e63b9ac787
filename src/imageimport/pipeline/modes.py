"""How an import treats each image: decoded and thumbnailed as it is imported (full), or
stored from its headers only, the thumbnail made later (lean; see pipeline/thumbnails.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageimport.settings import ImportMode

# The import option that says which, recorded in every import's options.
MODE_OPTION = "mode"


def mode_of(options: Mapping[str, Any]) -> ImportMode:
    # Imports recorded before there was a choice have no mode: they ran in full.
    return "lean" if options.get(MODE_OPTION) == "lean" else "full"
