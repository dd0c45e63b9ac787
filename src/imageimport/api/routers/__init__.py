"""The API's routers: one per resource, gathered under /api/v1 behind the optional token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from imageimport.api.auth import require_token
from imageimport.api.problems import problem_responses
from imageimport.api.routers import health, images, imports
from imageimport.api.schemas import API_PREFIX

api_router = APIRouter(
    prefix=API_PREFIX,
    dependencies=[Depends(require_token)],
    responses=problem_responses(401, 500),
)
api_router.include_router(imports.router)
api_router.include_router(images.router)

health_router = health.router

__all__ = ["api_router", "health_router"]
