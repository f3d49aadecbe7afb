"""`/problems/<slug>`: the page each problem's `type` URI names, for the humans who follow it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from gateway.catalogue import by_slug, index_page, page, problem_responses
from gateway.errors import NotFound

router = APIRouter(prefix="/problems", tags=["problems"])


@router.get("/", summary="Every problem type the gateway answers with", response_class=HTMLResponse)
async def problem_index() -> HTMLResponse:
    return HTMLResponse(index_page())


@router.get(
    "/{slug}",
    summary="What one problem type means, when it is answered, and whether to retry",
    response_class=HTMLResponse,
    responses=problem_responses(NotFound),
)
async def problem_page(slug: str) -> HTMLResponse:
    error = by_slug(slug)
    if error is None:
        raise NotFound(f"no problem type {slug!r}; see /problems/")
    return HTMLResponse(page(error))
