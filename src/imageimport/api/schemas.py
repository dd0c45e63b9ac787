"""Request and response bodies of the API (contract v1); their JSON Schemas make /docs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasPath, BaseModel, BeforeValidator, ConfigDict, Field

from imageimport.db import Counters, SyncRound
from imageimport.db.models import ImageState, Import, ImportState, ItemState, SyncTrigger

API_PREFIX = "/api/v1"

Provider = Literal["gdrive", "dropbox"]


# -- problems ---------------------------------------------------------------------------------


class FieldErrorOut(BaseModel):
    field: str = Field(description="The parameter or body field, dotted for nested ones.")
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="https://imageimport.dev/problems/<slug>, or about:blank for plain HTTP "
        "errors.",
        examples=["https://imageimport.dev/problems/not-found"],
    )
    title: str = Field(examples=["Not found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str = Field(description="A human sentence.", examples=["Import 1234 does not exist."])
    instance: str = Field(description="The request path.", examples=["/api/v1/imports/1234"])
    errors: list[FieldErrorOut] | None = Field(
        default=None, description="Validation problems only: what is wrong with which field."
    )
    checks: dict[str, str] | None = Field(
        default=None, description="Readiness problems only: each check's result."
    )


# -- imports ----------------------------------------------------------------------------------


class ImportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="A Google Drive folder link or a Dropbox shared folder link.",
        examples=["https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz"],
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "maxFileSizeBytes: this import's limit per file, at most the installation's "
            "MAX_FILE_SIZE_BYTES; mode: full (decode and thumbnail every image while "
            "importing) or lean (store the original and its headers' metadata; thumbnails "
            "later), the installation's IMPORT_MODE when left out; in Kubernetes mode also "
            "deleteImagesOnRemoval (an ImageImport's spec.options). Any other option is "
            "refused."
        ),
    )


class CountersOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    discovered: int = Field(ge=0, description="Files listed so far.")
    pending: int = Field(ge=0)
    imported: int = Field(ge=0, description="New images stored.")
    duplicates: int = Field(ge=0, description="Images that were already stored.")
    unchanged: int = Field(
        ge=0,
        description="Files as an earlier import of the folder found them: not downloaded.",
    )
    skipped: int = Field(ge=0, description="Files that are not images.")
    failed: int = Field(ge=0)
    cancelled: int = Field(ge=0)
    gone: int = Field(
        ge=0,
        description="Files a sync round found no longer in the folder (not in discovered).",
    )
    bytes: int = Field(ge=0, description="Bytes downloaded.")


class SyncCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prune: bool = Field(
        default=False,
        description="Delete the images of the files the round finds gone, unless a file "
        "still in a folder (of this or another import) holds them.",
    )


# Validated from a db.SyncRound.
class SyncOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    round: int = Field(ge=1, description="The import's round this sync started.")
    trigger: SyncTrigger = Field(description="What asked for it.")
    prune: bool
    started_at: datetime
    listed_at: datetime | None = Field(description="When its listing of the folder completed.")
    finished_at: datetime | None = Field(description="When the import settled after it.")
    added: int = Field(ge=0, description="Files new in the folder (or back after being gone).")
    changed: int = Field(ge=0, description="Files whose checksum, or size and time, changed.")
    unchanged: int = Field(ge=0, description="Files as recorded: not downloaded again.")
    gone: int = Field(ge=0, description="Files no longer in the folder.")
    pruned: int = Field(ge=0, description="Images deleted because their files were gone.")
    error: str | None = Field(description="Why the round's import failed, as a sentence.")


class RateOut(BaseModel):
    files_per_second: float = Field(ge=0)
    bytes_per_second: float = Field(ge=0)


class ImportLinks(BaseModel):
    self: str
    items: str
    events: str


def _import_links(import_id: str) -> ImportLinks:
    base = f"{API_PREFIX}/imports/{import_id}"
    return ImportLinks(self=base, items=f"{base}/items", events=f"{base}/events")


@dataclass(frozen=True)
class ImportStatus:
    """What an ImportOut is made from: the import's row, the tallies of its files and, for
    single-import reads and events, the file settled most recently."""

    record: Import
    counters: Counters
    last_sync: SyncRound | None = None
    current_file: str | None = None

    @property
    def progress(self) -> float | None:
        state, counters = self.record.state, self.counters
        if state in ("pending", "listing"):
            return None
        if counters.discovered == 0:
            return 0.0 if state == "importing" else 1.0
        return min(1.0, max(0.0, counters.finished / counters.discovered))

    @property
    def rate(self) -> RateOut:
        started = self.record.started_at
        if started is None:
            return RateOut(files_per_second=0.0, bytes_per_second=0.0)
        end = self.record.finished_at or datetime.now(UTC)
        elapsed = (end - started).total_seconds()
        if elapsed <= 0:
            return RateOut(files_per_second=0.0, bytes_per_second=0.0)
        return RateOut(
            files_per_second=round(max(0, self.counters.finished) / elapsed, 3),
            bytes_per_second=round(self.counters.bytes / elapsed, 1),
        )


def _of_record(name: str) -> AliasPath:
    return AliasPath("record", name)


# Validated from an ImportStatus. (A comment, not a docstring: that would become the schema's
# description in /docs.)
class ImportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(validation_alias=_of_record("id"), description="A UUID.")
    url: str = Field(validation_alias=_of_record("url"), description="The folder link, normalised.")
    provider: Provider = Field(validation_alias=_of_record("provider"))
    state: ImportState = Field(validation_alias=_of_record("state"))
    error: str | None = Field(
        validation_alias=_of_record("error"), description="Why the import failed, as a sentence."
    )
    created_at: datetime = Field(validation_alias=_of_record("created_at"))
    started_at: datetime | None = Field(validation_alias=_of_record("started_at"))
    finished_at: datetime | None = Field(validation_alias=_of_record("finished_at"))
    counters: CountersOut
    last_sync: SyncOut | None = Field(
        description="The import's latest sync round (POST .../sync); null if it had none."
    )
    progress: float | None = Field(
        ge=0, le=1, description="Settled / discovered files; null while the total is unknown."
    )
    rate: RateOut = Field(description="Since started_at, until finished_at or now.")
    current_file: str | None = Field(
        description="Path of the most recently settled file; single-import reads and events "
        "only (null in lists)."
    )
    links: Annotated[ImportLinks, BeforeValidator(_import_links)] = Field(
        validation_alias=_of_record("id")
    )


class ImportPage(BaseModel):
    items: list[ImportOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


# Validated from an ImportItem row.
class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    path: str = Field(description="Path inside the shared folder, '/'-separated.")
    size: int | None = Field(description="As reported by the source, when it reports one.")
    state: ItemState
    reason: str | None = Field(description="Why the file was skipped or failed, as a sentence.")
    attempts: int = Field(ge=0)
    image_id: int | None = Field(
        description="The stored image, for done, duplicate and unchanged files."
    )
    updated_at: datetime


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


# -- images -------------------------------------------------------------------------------------


class ImageLinks(BaseModel):
    self: str
    content: str
    thumbnail: str


def _image_links(image_id: int) -> ImageLinks:
    base = f"{API_PREFIX}/images/{image_id}"
    return ImageLinks(self=base, content=f"{base}/content", thumbnail=f"{base}/thumbnail")


# Validated from an Image row.
class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sha256: str
    name: str
    path: str
    size: int = Field(ge=0)
    content_type: str
    width: int
    height: int
    format: str
    taken_at: datetime | None = Field(description="EXIF capture time, when the file has one.")
    camera: str | None = Field(description="EXIF make and model, when the file has them.")
    provider: Provider
    source_file_id: str
    import_id: str | None = Field(description="The import that first stored this image.")
    created_at: datetime
    state: ImageState = Field(
        description="ready: its thumbnail is stored. unverified: imported in lean mode, from "
        "its headers only; its thumbnail is made on the first request for it. corrupt: its "
        "pixels could not be decoded when the thumbnail was made. The thumbnail link answers "
        "a placeholder picture until a thumbnail exists, and for a corrupt image."
    )
    # The links are made from the row's id.
    links: Annotated[ImageLinks, BeforeValidator(_image_links)] = Field(validation_alias="id")


class ImagePage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None


# -- health -------------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ok"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "queue": "ok", "store": "ok"}])
