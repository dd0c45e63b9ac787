"""What a listing does with each file it found, given what its import recorded of it. The
first listing of an import records every file as new; a sync round lists the folder again
into the same import, and sorts what it finds:

- a file the import has not recorded, or recorded as gone, is *added*: recorded and imported;
- a file whose checksum (without one, size and modification time) differs from the one
  recorded is *changed*: recorded as it is now and imported again, as a new version;
- any other file is *unchanged*: left as it was settled, except that a failed, cancelled or
  still pending one is imported again.

A file that this round's listing already found (a listing resumed after a crash) is left
alone and counted once. Files imported again go through the same check as new ones: those
whose bytes an import of the folder stored already are settled `unchanged` at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from imageimport import db
from imageimport.pipeline.unchanged import is_unchanged
from imageimport.sources.base import RemoteFile

# Unchanged files whose item still wants importing.
_IMPORTED_AGAIN = frozenset({"failed", "cancelled", "pending"})


@dataclass
class Relisting:
    new: list[RemoteFile] = field(default_factory=list)  # not recorded by the import yet
    again: list[tuple[int, RemoteFile]] = field(default_factory=list)  # (item id, file)
    seen: list[int] = field(default_factory=list)  # item ids of files left as they are
    added: int = 0
    changed: int = 0
    unchanged: int = 0


def sort_listed(
    files: Sequence[RemoteFile], recorded: Mapping[str, db.RecordedFile], round_: int
) -> Relisting:
    """Sort one batch of the listing of round `round_` (see the module's docstring);
    `recorded`: what the import recorded of these files (`db.recorded_files`)."""
    found = Relisting()
    for file in files:
        item = recorded.get(file.id)
        if item is None:
            found.new.append(file)
            found.added += 1
        elif item.seen_round == round_:
            continue
        elif item.state == "gone":
            found.again.append((item.id, file))
            found.added += 1
        elif file.refused is None and is_unchanged(file, item):
            found.unchanged += 1
            if item.state in _IMPORTED_AGAIN:
                found.again.append((item.id, file))
            else:
                found.seen.append(item.id)
        elif file.refused is not None and item.state == "failed":
            found.unchanged += 1  # refused again: it stays failed with its reason
            found.seen.append(item.id)
        else:
            found.again.append((item.id, file))
            found.changed += 1
    return found
