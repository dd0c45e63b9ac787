"""Opaque keyset cursors: an itsdangerous-signed, URL-safe JSON position.

The signature makes a tampered cursor fail cleanly (a 400 problem) instead of becoming an odd
query; the position inside is still validated field by field, so even a cursor signed with a
guessed key can only ever be a well-typed position. The key is derived from the settings,
so every API replica accepts the cursors of every other one, and across restarts."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from itsdangerous import BadPayload, BadSignature, URLSafeSerializer

from imageimport.api.problems import Problem
from imageimport.settings import Settings, secret

MAX_CURSOR_LENGTH = 512
MAX_ID = 2**63 - 1


def invalid_cursor(reason: str) -> Problem:
    return Problem(
        400,
        "invalid-cursor",
        f"The cursor is not valid ({reason}); start again from the first page without it.",
        title="Invalid cursor",
        errors=[{"field": "cursor", "message": reason}],
    )


def cursor_key(settings: Settings) -> bytes:
    material = "\0".join(
        ["imageimport-cursor-v1", secret(settings.api_token) or "", settings.effective_database_url]
    )
    return hashlib.sha256(material.encode()).digest()


def query_fingerprint(filters: dict[str, Any]) -> str:
    """Ties a cursor to the filters it was made for: a page of one query is no place to
    continue another."""
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Cursors:
    def __init__(self, key: bytes) -> None:
        self._serializer = URLSafeSerializer(
            key,
            salt="imageimport.api.pagination",
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )

    def encode(self, kind: str, position: dict[str, Any], filters: dict[str, Any]) -> str:
        return self._serializer.dumps({"k": kind, "p": position, "q": query_fingerprint(filters)})

    def decode(self, token: str, kind: str, filters: dict[str, Any]) -> dict[str, Any]:
        """The position stored in `token`; a 400 problem if it is not one of ours, unchanged."""
        if len(token) > MAX_CURSOR_LENGTH:
            raise invalid_cursor("it is too long")
        try:
            document = self._serializer.loads(token)
        except BadPayload:
            raise invalid_cursor("it is malformed") from None
        except BadSignature:
            raise invalid_cursor("it was altered or made by another server") from None
        # Several texts decode to the same bytes (base64's unused bits, JSON's spellings):
        # only the one we produce is accepted, so any edit to a cursor is refused.
        if self._serializer.dumps(document) != token:
            raise invalid_cursor("it was altered or made by another server")
        if not isinstance(document, dict) or document.get("k") != kind:
            raise invalid_cursor("it belongs to another list")
        if document.get("q") != query_fingerprint(filters):
            raise invalid_cursor("it was made for different filters")
        position = document.get("p")
        if not isinstance(position, dict):
            raise invalid_cursor("it is malformed")
        return position


def id_position(position: dict[str, Any]) -> int:
    value = position.get("id")
    # bool is an int to Python, but never an id.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
        raise invalid_cursor("it is malformed")
    return value


def time_and_id_position(position: dict[str, Any]) -> tuple[datetime, str]:
    stamp, identifier = position.get("at"), position.get("id")
    if not isinstance(stamp, str) or not isinstance(identifier, str) or len(stamp) > 40:
        raise invalid_cursor("it is malformed")
    try:
        moment = datetime.fromisoformat(stamp)
        identifier = str(uuid.UUID(identifier))
    except ValueError:
        raise invalid_cursor("it is malformed") from None
    if moment.utcoffset() is None:  # every cursor we make carries its zone
        raise invalid_cursor("it is malformed")
    return moment, identifier
