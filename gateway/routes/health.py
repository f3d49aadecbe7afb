"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import PublisherDep
from gateway.errors import BrokerUnavailable
from gateway.openapi import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the broker connection and a channel are open",
    responses=problem_responses(503),
)
async def readyz(publisher: PublisherDep) -> dict[str, str]:
    if not publisher.ready:
        raise BrokerUnavailable("the broker connection or its channels are down")
    return {"status": "ready"}
