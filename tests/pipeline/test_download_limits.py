"""The size limit a download applies: the installation's MAX_FILE_SIZE_BYTES, or the import's
own maxFileSizeBytes when that is lower."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from imageimport.pipeline.download import Limits
from imageimport.settings import Settings

LIMIT = 5_000_000


@pytest.mark.parametrize(
    ("options", "max_bytes", "named"),
    [
        (None, LIMIT, "MAX_FILE_SIZE_BYTES"),
        ({}, LIMIT, "MAX_FILE_SIZE_BYTES"),
        ({"maxFileSizeBytes": 1000}, 1000, "the import's maxFileSizeBytes"),
        # Never more than the installation's, which may have been lowered since the import
        # started; and whatever an import recorded before its options were checked is ignored.
        ({"maxFileSizeBytes": LIMIT + 1}, LIMIT, "MAX_FILE_SIZE_BYTES"),
        ({"maxFileSizeBytes": "1000"}, LIMIT, "MAX_FILE_SIZE_BYTES"),
        ({"maxFileSizeBytes": True}, LIMIT, "MAX_FILE_SIZE_BYTES"),
        ({"maxFileSizeBytes": 0}, LIMIT, "MAX_FILE_SIZE_BYTES"),
    ],
)
def test_the_lower_of_the_two_limits_applies(
    make_settings: Callable[..., Settings],
    options: dict[str, Any] | None,
    max_bytes: int,
    named: str,
) -> None:
    limits = Limits.of(make_settings(max_file_size_bytes=LIMIT), options)
    assert (limits.max_bytes, limits.max_bytes_from) == (max_bytes, named)
