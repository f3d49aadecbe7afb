"""`POST /v1/exchanges/{exchange}/messages`: validate, publish, answer once confirmed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request
from starlette.datastructures import Headers
from starlette.responses import Response

from gateway import compose
from gateway.access import ACCESS_MESSAGE_ID
from gateway.answers import Timing, answer_once
from gateway.body import read_capped
from gateway.compose import Form
from gateway.deps import publish_services
from gateway.envelope import parse_publish_request
from gateway.errors import ExchangeNotFound, GatewayError
from gateway.idempotency import Answer
from gateway.openapi import PUBLISH_ONE_BODY, PUBLISHED, problem_responses
from gateway.publisher import Confirmed, Outgoing
from hareway.wire import JSON_CONTENT_TYPE

router = APIRouter(prefix="/v1", tags=["publish"])


@router.post(
    "/exchanges/{exchange}/messages",
    status_code=202,
    summary="Publish one message; answered once the broker confirmed it",
    description=(
        "Three body forms: the JSON envelope (`application/json`), a structured-mode "
        "CloudEvent (`application/cloudevents+json`), or a binary-mode CloudEvent "
        "(`ce-specversion`, `ce-id`, `ce-source`, `ce-type` headers, any content type, the "
        "body published byte for byte). Send `Idempotency-Key` to make retries safe."
    ),
    openapi_extra={"requestBody": PUBLISH_ONE_BODY},
    responses={
        202: PUBLISHED,
        **problem_responses(
            400, 401, 403, ExchangeNotFound, 408, 409, 413, 415, 422, 429, 431, 503
        ),
    },
)
async def publish_message(
    exchange: str,
    request: Request,
    routing_key: Annotated[
        str | None, Query(description="CloudEvents only: the routing key, else the event type")
    ] = None,
) -> Response:
    timing = Timing()
    # One coroutine: the failure's Server-Timing is added here, on the way out.
    try:
        services = publish_services(request)
        caller = services.authenticator.publisher(request, exchange)
        publisher, settings = services.publisher, services.settings
        headers = request.headers
        compose.check_exchange(exchange)
        fields = compose.header_fields(request.scope["headers"])
        form = compose.body_form(fields)
        key = compose.idempotency_key(fields)
        raw = await read_capped(request, settings.max_message_bytes)
        context = services.context(exchange, caller, request.scope)
        if form is Form.ENVELOPE:
            outgoing = compose.from_envelope(
                parse_publish_request(raw), context, context.keyed_message_id(key)
            )
        else:
            outgoing = compose.from_cloudevent(form, headers, raw, routing_key, context)
        timing.validated()

        if key is None:
            # No key, nothing to answer once: two coroutines fewer on the common path.
            answer = _accepted(outgoing, timing, await publisher.publish(outgoing))
            replayed = False
        else:

            async def publish() -> Answer:
                return _accepted(outgoing, timing, await publisher.publish(outgoing))

            answer, replayed = await answer_once(
                services.idempotency_keys,
                caller.name,
                key,
                _request_parts(exchange, headers, routing_key, raw),
                publish,
            )
        message_id = outgoing.message_id
        response_headers = {}
        if replayed:
            timing.replayed()
            response_headers["Idempotent-Replayed"] = "true"
            message_id = str(orjson.loads(answer.body).get("message_id", message_id))
        request.scope[ACCESS_MESSAGE_ID] = message_id
        response_headers["Location"] = f"/v1/messages/{quote(message_id, safe='')}"
        response_headers["Server-Timing"] = timing.header()
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=JSON_CONTENT_TYPE,
            headers=response_headers,
        )
    except GatewayError as error:
        error.server_timing = timing.header()
        raise


def _request_parts(
    exchange: str, headers: Headers, routing_key: str | None, raw: bytes
) -> Iterator[str | bytes]:
    # A generator: read only under an Idempotency-Key, to hash the request.
    yield from ("messages", exchange, headers.get("content-type", ""), routing_key or "")
    yield from sorted(f"{name}={value}" for name, value in headers.items() if name[:3] == "ce-")
    yield raw


def _accepted(outgoing: Outgoing, timing: Timing, confirmed: Confirmed) -> Answer:
    timing.confirmed(confirmed.sent_at)
    body = {
        "message_id": outgoing.message_id,
        "exchange": outgoing.exchange,
        "routing_key": outgoing.routing_key,
        "status": "confirmed",
    }
    return Answer(202, orjson.dumps(body))
