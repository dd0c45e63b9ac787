"""`imageimport` with one file made poisonous: processing the file whose SHA-256 is in
$POISON_SHA256 kills the whole process (os._exit), every time, like a decoder crash would.
The product has no hook for this; the tests run the CLI through this wrapper instead."""

from __future__ import annotations

import hashlib
import os
from typing import Any, BinaryIO

from imageimport.pipeline import imaging, process

POISON = os.environ["POISON_SHA256"]
_inspect = process.inspect


def _crashing_inspect(file: BinaryIO, *args: Any, **kwargs: Any) -> Any:
    file.seek(0)
    digest = hashlib.sha256(file.read()).hexdigest()
    if digest == POISON:
        os._exit(1)
    return _inspect(file, *args, **kwargs)


process.inspect = _crashing_inspect  # type: ignore[assignment]
imaging.inspect = _crashing_inspect  # type: ignore[assignment]

if __name__ == "__main__":
    from imageimport.cli import app

    app(prog_name="imageimport")
