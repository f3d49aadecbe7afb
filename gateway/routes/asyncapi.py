"""`GET /asyncapi.json`: the AsyncAPI 3.0 document of the topology the gateway loaded
(hareway/asyncapi.py), open like `/openapi.json`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hareway.wire import JSON_CONTENT_TYPE

router = APIRouter(tags=["asyncapi"])


@router.get(
    "/asyncapi.json",
    summary="The AsyncAPI 3.0 document of the topology: exchanges, queues, retry ladders",
    description=(
        "Exchanges and queues as channels with their AMQP bindings, the topology's JSON "
        "Schemas as message payloads, and each queue's retry and dead-letter channels. "
        "`hareway topology asyncapi` writes the same document from the topology file."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "the AsyncAPI 3.0.0 document",
            "content": {JSON_CONTENT_TYPE: {"schema": {"type": "object"}}},
        }
    },
)
async def asyncapi_json(request: Request) -> Response:
    # Built once in the lifespan, from the topology every publish is checked against.
    document: bytes = request.app.state.asyncapi
    return Response(document, media_type=JSON_CONTENT_TYPE)
