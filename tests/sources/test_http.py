"""The shared HTTP client's own decoding: what servers legitimately send still arrives intact,
a chunk at a time (the hostile cases are in tests/security/test_hostile_http.py)."""

from __future__ import annotations

import email.utils
import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from imageimport.errors import TransientError
from imageimport.settings import Settings
from imageimport.sources.budget import MemorySlotBook, RequestBudget
from imageimport.sources.http import (
    CHUNK_SIZE,
    iter_body,
    make_http_client,
    open_stream,
    parse_retry_after,
)

URL = "https://source.example/file"
UNLIMITED = RequestBudget.of(MemorySlotBook(), "gdrive", None, rate=0, burst=1)
PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: several chunks


class Streamed(httpx.SyncByteStream):
    """A body handed over in network-sized pieces, as a real transport does (a plain
    httpx.Response(content=...) would be read, and decoded by httpx, before any hook)."""

    def __init__(self, body: bytes, piece: int = 64 * 1024) -> None:
        self.body = body
        self.piece = piece

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.piece):
            yield self.body[start : start + self.piece]


def fetch(tmp_path: Path, body: bytes | httpx.SyncByteStream, encoding: str = "") -> list[bytes]:
    headers = {"content-encoding": encoding} if encoding else {}
    settings = Settings(_env_file=None, data_dir=tmp_path, gdrive_web_url="https://source.example")
    stream = body if isinstance(body, httpx.SyncByteStream) else Streamed(body)

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        return httpx.Response(200, headers=headers, stream=stream)

    with (
        make_http_client(settings, UNLIMITED, transport=httpx.MockTransport(answer)) as client,
        open_stream(client, "GET", URL, "Reading the file") as response,
    ):
        assert "content-encoding" not in response.headers
        return list(iter_body(response, "Reading the file"))


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("", PAYLOAD),
        ("identity", PAYLOAD),
        ("gzip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("GZip", gzip.compress(PAYLOAD)),
        # RFC 1952 allows several members one after the other.
        ("gzip", gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:])),
        ("deflate", zlib.compress(PAYLOAD)),  # the zlib format RFC 9110 names
        ("deflate", zlib.compress(PAYLOAD)[2:-4]),  # raw deflate, as some servers send
        ("gzip, identity", gzip.compress(PAYLOAD)),
    ],
)
def test_one_layer_or_none_arrives_intact(tmp_path: Path, encoding: str, body: bytes) -> None:
    chunks = fetch(tmp_path, body, encoding)
    assert b"".join(chunks) == PAYLOAD
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE


def test_one_layer_is_inflated_a_chunk_at_a_time(tmp_path: Path) -> None:
    """64 MiB of zeros arrive as 64 KiB of gzip; no step inflates more than a chunk."""
    zeros = 64 * 1024 * 1024
    chunks = fetch(tmp_path, gzip.compress(bytes(zeros)), "gzip")
    assert sum(len(chunk) for chunk in chunks) == zeros
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE


class Dropping(Streamed):
    def __iter__(self) -> Iterator[bytes]:
        yield self.body[:1000]
        raise httpx.ReadError("connection reset")


def test_a_connection_dropped_mid_body_stays_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientError, match="dropped mid-answer"):
        fetch(tmp_path, Dropping(gzip.compress(PAYLOAD)), "gzip")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: at once
        (3.5, 3.5),  # as the Dropbox SDK hands it over
        ("", None),
        (None, None),
        ("soon", None),  # unreadable: the usual backoff, not an error of its own
        ("Wed, 99 Foo 2015", None),
    ],
)
def test_retry_after_is_seconds_or_a_date(
    header: str | float | None, seconds: float | None
) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_a_future_date_is_the_time_until_then() -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = parse_retry_after(later)
    assert waited is not None and 100 < waited <= 120
