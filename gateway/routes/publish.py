"""`POST /v1/exchanges/{exchange}/messages`: validate, publish, answer once confirmed."""

from __future__ import annotations

import time
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.body import read_capped
from gateway.deps import PublisherDep, SettingsDep
from gateway.envelope import PublishRequest, parse_publish_request
from gateway.openapi import problem_responses
from gateway.publisher import Outgoing
from hareway.wire import JSON_CONTENT_TYPE, new_message_id

router = APIRouter(prefix="/v1", tags=["publish"])

_REQUEST_BODY = {
    "required": True,
    "content": {JSON_CONTENT_TYPE: {"schema": PublishRequest.model_json_schema()}},
}


@router.post(
    "/exchanges/{exchange}/messages",
    status_code=202,
    summary="Publish one message; answered once the broker confirmed it",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        202: {"description": "Confirmed by the broker; Location names the message"},
        **problem_responses(400, 404, 413, 422, 503),
    },
)
async def publish_message(
    exchange: str, request: Request, publisher: PublisherDep, settings: SettingsDep
) -> Response:
    started = time.perf_counter()
    raw = await read_capped(request, settings.max_message_bytes)
    envelope = parse_publish_request(raw)
    message_id = envelope.message_id or request.headers.get("idempotency-key") or new_message_id()
    outgoing = Outgoing(
        exchange=exchange,
        routing_key=envelope.routing_key,
        body=envelope.payload_bytes(),
        message_id=message_id,
        content_type=JSON_CONTENT_TYPE,
        headers=dict(envelope.headers),
        correlation_id=envelope.correlation_id,
        priority=envelope.priority,
        expiration_ms=envelope.expiration_ms,
    )
    validated = time.perf_counter()
    await publisher.publish(outgoing)
    confirmed = time.perf_counter()
    body = {
        "message_id": message_id,
        "exchange": exchange,
        "routing_key": envelope.routing_key,
        "status": "confirmed",
    }
    return Response(
        orjson.dumps(body),
        status_code=202,
        media_type=JSON_CONTENT_TYPE,
        headers={
            "Location": f"/v1/messages/{quote(message_id, safe='')}",
            "Server-Timing": server_timing(started, validated, confirmed),
        },
    )


def server_timing(started: float, validated: float, confirmed: float) -> str:
    """Milliseconds per phase, as the browser's DevTools show them."""
    return (
        f"validate;dur={(validated - started) * 1000:.3f}, "
        f'publish;desc="publish and confirm";dur={(confirmed - validated) * 1000:.3f}'
    )
