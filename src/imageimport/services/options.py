"""What an import may ask for: the options an ImageImport's spec (or the API's request in
Kubernetes mode) may carry, checked against what this installation's workers do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageimport.errors import ImageImportError
from imageimport.services.credentials import OPTION, SecretRef
from imageimport.settings import Settings
from imageimport.sources.registry import parse_folder_url

# spec.options the pipeline honours as the CRD describes them (concurrency is only a hint).
KNOWN_OPTIONS = (
    "recursive",
    "maxFileSizeBytes",
    "includeNonImages",
    "concurrency",
    "deleteImagesOnRemoval",
)


class SpecError(ImageImportError):
    """The resource asks for something this installation cannot do; the sentence says what."""


def check_spec(spec: Mapping[str, Any], settings: Settings) -> None:
    """InvalidSourceURL or SpecError, with a sentence for status.message, when the spec asks
    for something the workers would not do (they use the installation's settings)."""
    parse_folder_url(str((spec.get("source") or {}).get("url", "")))
    destination = spec.get("destination") or {}
    bucket = destination.get("bucket")
    if bucket and bucket != settings.s3_bucket:
        where = f"the bucket {settings.s3_bucket!r}" if settings.s3_bucket else "a local folder"
        raise SpecError(
            f"spec.destination.bucket is {bucket!r}, but this installation stores images in "
            f"{where}; leave the field out (per-import buckets are not supported)."
        )
    prefix = destination.get("prefix")
    if prefix is not None and prefix.strip("/") != settings.s3_prefix.strip("/"):
        raise SpecError(
            f"spec.destination.prefix is {prefix!r}, but this installation stores images under "
            f"{settings.s3_prefix!r}; leave the field out (per-import prefixes are not supported)."
        )
    options = spec.get("options") or {}
    if options.get("recursive") is False:
        raise SpecError(
            "spec.options.recursive is false, but imports always include the subfolders; "
            "share only the folder you want, or leave the option out."
        )
    if options.get("includeNonImages") is True:
        raise SpecError(
            "spec.options.includeNonImages is true, but only images are stored; "
            "leave the option out."
        )
    size = options.get("maxFileSizeBytes")
    if size is not None and int(size) != settings.max_file_size_bytes:
        raise SpecError(
            f"spec.options.maxFileSizeBytes is {size}, but this installation's limit is "
            f"{settings.max_file_size_bytes} bytes (MAX_FILE_SIZE_BYTES) for every import; "
            "leave the option out."
        )


def import_options(spec: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """What `imports.options` records: the resource, its options, the Secret's name only."""
    options: dict[str, Any] = {
        key: value for key, value in (spec.get("options") or {}).items() if key in KNOWN_OPTIONS
    }
    options["resource"] = {"namespace": namespace, "name": name}
    ref = SecretRef.from_spec(spec, namespace)
    if ref is not None:
        options[OPTION] = ref.to_options()
    return options
