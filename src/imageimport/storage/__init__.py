"""Object stores: a local folder by default, S3 (or anything speaking its API) when configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageimport.storage.base import ObjectStore

if TYPE_CHECKING:
    from imageimport.settings import Settings

__all__ = ["ObjectStore", "make_store", "validate_key", "validate_prefix"]

# Temporary files of the local store start with this; keys may not, so a listing never
# confuses a half-written upload with an object.
TEMP_PREFIX = ".tmp-"


def make_store(settings: Settings) -> ObjectStore:
    """S3 when a bucket is configured, a folder under the data directory otherwise."""
    # Imported here so a local-only deployment never pays for importing boto3.
    if settings.s3_bucket:
        from imageimport.storage.s3 import S3Store

        return S3Store(settings)
    from imageimport.storage.local import LocalStore

    return LocalStore(settings.effective_objects_dir)


def _refuse(what: str, value: str, reason: str) -> ValueError:
    return ValueError(f"Refusing object {what} {value!r}: {reason}.")


def _check_characters(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"Object {what}s must be strings, got {type(value).__name__}.")
    if value.startswith("/"):
        raise _refuse(what, value, "it is absolute")
    if "\\" in value:
        raise _refuse(what, value, "it contains a backslash")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise _refuse(what, value, "it contains a NUL or other control character")
    if ".." in value:
        raise _refuse(what, value, "it contains '..'")


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative "/"-separated name, else ValueError.

    Keys come from our own code, never from users, so anything unusual is a bug or an attack
    and is refused rather than normalised."""
    _check_characters("key", key)
    if not key:
        raise _refuse("key", key, "it is empty")
    for segment in key.split("/"):
        if not segment:
            raise _refuse("key", key, "it has an empty path segment")
        if segment == ".":
            raise _refuse("key", key, "it has a '.' path segment")
        if segment.startswith(TEMP_PREFIX):
            raise _refuse("key", key, f"a path segment starts with {TEMP_PREFIX!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: like a key, but may be empty and may end with "/"."""
    _check_characters("prefix", prefix)
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if body:
        validate_key(body)
    elif prefix:
        raise _refuse("prefix", prefix, "it is only a '/'")
    return prefix
