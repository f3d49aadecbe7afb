"""Liveness, readiness and metrics: open to probes and scrapers, no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.deps import PublisherDep
from gateway.drain import Drain
from gateway.errors import BrokerUnavailable, Draining
from gateway.metrics import CONTENT_TYPE_LATEST, Metrics
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
async def readyz(request: Request, publisher: PublisherDep) -> dict[str, str]:
    drain: Drain | None = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:
        raise Draining("the gateway is shutting down: send requests to another one")
    if not publisher.ready:
        raise BrokerUnavailable(
            "the broker connection or its channels are down, or every recent publish was "
            "nacked or left unconfirmed"
        )
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics: published messages by outcome, confirm latency",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text format"}},
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
