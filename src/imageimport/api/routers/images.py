"""/api/v1/images: browse, fetch and delete stored images."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BeforeValidator

from imageimport import db
from imageimport.api.deps import CursorsDep, RuntimeDep, SessionDep, SettingsDep, StoreDep
from imageimport.api.pagination import MAX_ID, id_position
from imageimport.api.placeholders import placeholder
from imageimport.api.problems import (
    Problem,
    invalid_request_detail,
    not_found,
    problem_responses,
)
from imageimport.api.schemas import ImageOut, ImagePage, Provider
from imageimport.db.models import Image, ImageState
from imageimport.errors import ImageImportError
from imageimport.pipeline import thumbnails
from imageimport.pipeline.imaging import THUMBNAIL_CONTENT_TYPE, ImageFormat
from imageimport.runtime import Runtime
from imageimport.services import images
from imageimport.settings import Settings
from imageimport.storage.base import ObjectStore

log = logging.getLogger(__name__)

router = APIRouter(prefix="/images", tags=["images"])

# Presigned URLs live a little longer than a browser needs to start the download.
PRESIGNED_SECONDS = 300

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="The image id.")]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _not_a_number(value: Any) -> Any:
    # Pydantic would read "1626255005" as a Unix time; the API speaks ISO 8601 only.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("Input should be an ISO 8601 date-time, e.g. 2021-07-14T09:30:05Z")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def load_image(session: db.Session, image_id: int) -> Image:
    image = db.get_image(session, image_id)
    if image is None:
        raise not_found(f"Image {image_id}")
    return image


def _utc(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        errors = [{"field": name, "message": "Input is outside the supported range of dates"}]
        raise Problem(
            422,
            "validation-error",
            invalid_request_detail(errors),
            title="Invalid request",
            errors=errors,
        ) from None


@router.get(
    "",
    response_model=ImagePage,
    summary="List images, newest first",
    responses=problem_responses(400, 422),
)
def list_images(
    session: SessionDep,
    cursors: CursorsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` of the previous page.", max_length=512)
    ] = None,
    import_id: Annotated[
        uuid.UUID | None,
        Query(description="Only images found by this import, duplicates included."),
    ] = None,
    provider: Annotated[Provider | None, Query()] = None,
    format: Annotated[
        ImageFormat | None,
        BeforeValidator(_upper),
        Query(description="Image format, e.g. JPEG (case-insensitive)."),
    ] = None,
    name: Annotated[
        str | None,
        Query(
            description="Case-insensitive substring of the file name.",
            max_length=200,
            pattern=r"^[^\x00]*$",
        ),
    ] = None,
    taken_after: Annotated[
        datetime | None,
        BeforeValidator(_not_a_number),
        Query(description="EXIF capture time at or after, ISO 8601 (UTC if no zone)."),
    ] = None,
    taken_before: Annotated[
        datetime | None,
        BeforeValidator(_not_a_number),
        Query(description="EXIF capture time strictly before, ISO 8601 (UTC if no zone)."),
    ] = None,
) -> ImagePage:
    after, before = _utc("taken_after", taken_after), _utc("taken_before", taken_before)
    filters = {
        "import_id": str(import_id) if import_id else None,
        "provider": provider,
        "format": format.value if format else None,
        "name": name,
        "taken_after": after.isoformat() if after else None,
        "taken_before": before.isoformat() if before else None,
    }
    where = db.ImageFilter(
        import_id=str(import_id) if import_id else None,
        provider=provider,
        format=format.value if format else None,
        name=name,
        taken_after=after,
        taken_before=before,
    )
    below = id_position(cursors.decode(cursor, "images", filters)) if cursor is not None else None
    rows = db.image_page(session, where, limit + 1, after=below, newest_first=True)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursors.encode("images", {"id": page[-1].id}, filters)
    return ImagePage(
        items=[ImageOut.model_validate(image) for image in page], next_cursor=next_cursor
    )


@router.get(
    "/{image_id}",
    response_model=ImageOut,
    summary="One image's metadata",
    responses=problem_responses(404, 422),
)
def get_image(image_id: ImageId, session: SessionDep) -> ImageOut:
    return ImageOut.model_validate(load_image(session, image_id))


_BYTES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The bytes (local object store); for a thumbnail not made yet or of a "
        "corrupt image, a placeholder picture (image/svg+xml, not cached).",
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    307: {"description": "S3 object store: a redirect to a presigned URL valid for 5 minutes."},
    **problem_responses(404, 422, 502, 503),
}


@router.get(
    "/{image_id}/content",
    summary="The original image",
    response_class=Response,
    responses=_BYTES_RESPONSES,
)
def image_content(
    image_id: ImageId,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    image = load_image(session, image_id)
    key, content_type, tag = image.object_key, image.content_type, image.sha256
    session.close()  # give the connection back before a long download
    return _serve(request, store, settings, key, content_type, tag, f"image {image_id}")


@router.get(
    "/{image_id}/thumbnail",
    summary="The image's WebP thumbnail",
    response_class=Response,
    responses=_BYTES_RESPONSES,
)
def image_thumbnail(
    image_id: ImageId,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
) -> Response:
    """An image imported in lean mode gets its thumbnail made on the first request for it;
    until one exists, and for a corrupt image, the answer is a placeholder picture (SVG, not
    cached), never an error."""
    image = load_image(session, image_id)
    state, key, tag = image.state, image.thumbnail_key, f"{image.sha256}-thumb"
    session.close()
    if state == "unverified":
        state = _made_thumbnail(runtime, image_id)
    if state != "ready":
        return placeholder("corrupt" if state == "corrupt" else "unverified")
    return _serve(
        request,
        runtime.store,
        settings,
        key,
        THUMBNAIL_CONTENT_TYPE,
        tag,
        f"the thumbnail of image {image_id}",
    )


def _made_thumbnail(runtime: Runtime, image_id: int) -> ImageState:
    """The image's state after trying to make its thumbnail now."""
    try:
        state = thumbnails.make_thumbnail(runtime, image_id)
    except KeyError:
        log.warning("image %s: its original is missing from the store", image_id)
        return "unverified"
    except ImageImportError as error:
        # The store or the database is unavailable: the next request tries again.
        log.warning("image %s: thumbnail not made yet: %s", image_id, error)
        return "unverified"
    if state is None:
        raise not_found(f"Image {image_id}")
    return state


def _serve(
    request: Request,
    store: ObjectStore,
    settings: Settings,
    key: str,
    content_type: str,
    tag: str,
    what: str,
) -> Response:
    url = store.presigned_url(key, PRESIGNED_SECONDS)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    etag = f'"{tag}"'
    # Content-addressed, so it never changes; but responses to authorised requests must not
    # sit in shared caches.
    scope = "private" if settings.api_token else "public"
    headers = {
        "ETag": etag,
        "Cache-Control": f"{scope}, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    try:
        chunks = store.iter_bytes(key)
    except KeyError:
        raise not_found(f"The stored file of {what}") from None
    return StreamingResponse(chunks, media_type=content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


@router.delete(
    "/{image_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an image and its stored files",
    responses=problem_responses(404, 422),
)
def delete_image(image_id: ImageId, runtime: RuntimeDep) -> Response:
    """Files of imports that found this image keep their state; their `image_id` becomes
    null. Importing the folder again stores the image again."""
    if not images.delete_images(runtime, db.one_image(image_id)):
        raise not_found(f"Image {image_id}")
    return Response(status_code=204)
