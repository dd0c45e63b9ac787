"""What an import may ask for, checked against what this installation's workers do: the
options of an import started through the REST API, and an ImageImport's spec (which the API's
Kubernetes mode makes from a request's options)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageimport.errors import ImageImportError
from imageimport.pipeline.download import MAX_FILE_SIZE_OPTION
from imageimport.pipeline.modes import MODE_OPTION
from imageimport.services.credentials import OPTION, SecretRef
from imageimport.settings import IMPORT_MODES, Settings
from imageimport.sources.registry import parse_folder_url

DELETE_IMAGES_OPTION = "deleteImagesOnRemoval"
# What an import may ask for in every mode: the workers honour it per import...
IMPORT_OPTIONS = (MAX_FILE_SIZE_OPTION, MODE_OPTION)
# ...and what an ImageImport's spec.options adds: what its removal does.
SPEC_OPTIONS = (*IMPORT_OPTIONS, DELETE_IMAGES_OPTION)
# spec.options of earlier versions of the CRD, see `_check_retired_fields`.
_RETIRED_OPTIONS = ("recursive", "includeNonImages", "concurrency")

SUPPORTED_SPEC = (
    "an ImageImport supports spec.source.url, spec.source.credentialsSecretRef, "
    f"spec.options.{MAX_FILE_SIZE_OPTION}, spec.options.{MODE_OPTION}, "
    f"spec.options.{DELETE_IMAGES_OPTION} and spec.sync"
)


class SpecError(ImageImportError):
    """The import asks for something this installation cannot do; the sentence says what."""


def check_import_options(options: Mapping[str, Any], settings: Settings) -> None:
    """SpecError when the options of an import started through the REST API (outside
    Kubernetes mode) hold anything the workers would not honour."""
    unknown = sorted(set(options) - set(IMPORT_OPTIONS))
    if unknown:
        raise SpecError(
            f"Unknown option(s) {', '.join(unknown)}: an import's options are "
            f"{', '.join(IMPORT_OPTIONS)} ({DELETE_IMAGES_OPTION} too in Kubernetes mode, "
            "where an import is an ImageImport resource)."
        )
    _check_values(options, settings, "options")


def check_spec(spec: Mapping[str, Any], settings: Settings) -> None:
    """InvalidSourceURL or SpecError, with a sentence for status.message, when the spec asks
    for something the workers would not do."""
    parse_folder_url(str((spec.get("source") or {}).get("url", "")))
    _check_retired_fields(spec, settings)
    options = spec.get("options") or {}
    unknown = sorted(set(options) - set(SPEC_OPTIONS) - set(_RETIRED_OPTIONS))
    if unknown:
        fields = ", ".join(f"spec.options.{name}" for name in unknown)
        raise SpecError(f"Unknown field(s) {fields}: {SUPPORTED_SPEC}.")
    _check_values(options, settings, "spec.options")


def import_options(spec: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """What `imports.options` records: the resource, its options, the Secret's name only."""
    options: dict[str, Any] = {
        key: value for key, value in (spec.get("options") or {}).items() if key in SPEC_OPTIONS
    }
    options["resource"] = {"namespace": namespace, "name": name}
    ref = SecretRef.from_spec(spec, namespace)
    if ref is not None:
        options[OPTION] = ref.to_options()
    return options


def with_mode(options: Mapping[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """The options an import is recorded with, which say how it ran: its own mode, else the
    installation's IMPORT_MODE. Full mode is left unsaid there: an import without a mode ran
    in full, as every import did before there was a choice (see pipeline.modes.mode_of)."""
    recorded = dict(options or {})
    if settings.import_mode != "full":
        recorded.setdefault(MODE_OPTION, settings.import_mode)
    return recorded


def _check_values(options: Mapping[str, Any], settings: Settings, field: str) -> None:
    mode = options.get(MODE_OPTION)
    if mode is not None and mode not in IMPORT_MODES:
        raise SpecError(
            f"{field}.{MODE_OPTION} is {mode!r}, but it must be {' or '.join(IMPORT_MODES)} "
            "(or left out: the installation's IMPORT_MODE)."
        )
    size = options.get(MAX_FILE_SIZE_OPTION)
    limit = settings.max_file_size_bytes
    if size is not None and (type(size) is not int or size < 1):
        raise SpecError(
            f"{field}.{MAX_FILE_SIZE_OPTION} is {size!r}, but it must be a number of bytes "
            f"from 1 to this installation's limit, {limit} (MAX_FILE_SIZE_BYTES)."
        )
    if size is not None and size > limit:
        raise SpecError(
            f"{field}.{MAX_FILE_SIZE_OPTION} is {size}, but this installation's limit is "
            f"{limit} bytes (MAX_FILE_SIZE_BYTES) for every import; ask for at most that, or "
            "leave the option out."
        )
    delete = options.get(DELETE_IMAGES_OPTION)
    if delete is not None and type(delete) is not bool:
        raise SpecError(
            f"{field}.{DELETE_IMAGES_OPTION} is {delete!r}, but it must be true or false."
        )


def _check_retired_fields(spec: Mapping[str, Any], settings: Settings) -> None:
    """Fields of earlier versions of the CRD, which an installed CRD keeps until it is applied
    again (`helm upgrade` never updates CRDs) and which defaulted recursive: true and
    includeNonImages: false into every resource. Accepted when they ask for what every import
    does anyway; refused otherwise, rather than imported differently from what they say.
    `concurrency` was only ever a hint (each worker gives one import up to CONCURRENCY x
    IMPORT_CONCURRENCY_SHARE of its slots), so it is accepted and ignored as before."""
    destination = spec.get("destination") or {}
    bucket = destination.get("bucket")
    if bucket and bucket != settings.s3_bucket:
        where = f"the bucket {settings.s3_bucket!r}" if settings.s3_bucket else "a local folder"
        raise SpecError(
            f"spec.destination.bucket is {bucket!r}, but this installation stores every "
            f"import in {where}; remove spec.destination ({SUPPORTED_SPEC})."
        )
    prefix = destination.get("prefix")
    if prefix is not None and prefix.strip("/") != settings.s3_prefix.strip("/"):
        raise SpecError(
            f"spec.destination.prefix is {prefix!r}, but this installation stores every "
            f"import under {settings.s3_prefix!r}; remove spec.destination ({SUPPORTED_SPEC})."
        )
    options = spec.get("options") or {}
    if options.get("recursive") is False:
        raise SpecError(
            "spec.options.recursive is false, but imports always include the subfolders; "
            f"share only the folder you want and remove the option ({SUPPORTED_SPEC})."
        )
    if options.get("includeNonImages") is True:
        raise SpecError(
            "spec.options.includeNonImages is true, but only images are stored; remove the "
            f"option ({SUPPORTED_SPEC})."
        )
