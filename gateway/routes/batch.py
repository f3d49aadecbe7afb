"""`POST /v1/exchanges/{exchange}/batch`: many messages, confirms in flight together."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway import compose
from gateway.access import ACCESS_MESSAGE_ID
from gateway.answers import Timing, answer_once
from gateway.body import read_capped
from gateway.deps import publish_services
from gateway.envelope import parse_json, validate_message
from gateway.errors import (
    BrokerError,
    ExchangeNotFound,
    GatewayError,
    Nacked,
    Unroutable,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.idempotency import Answer
from gateway.openapi import BATCH_BODY, BATCH_RESULTS, problem_responses
from gateway.problems import problem_body
from gateway.publisher import Confirmed, Outgoing
from hareway.wire import JSON_CONTENT_TYPE

router = APIRouter(prefix="/v1", tags=["publish"])


@router.post(
    "/exchanges/{exchange}/batch",
    status_code=202,
    summary="Publish up to max_batch messages; one result per message, in order",
    description=(
        "Every valid message is published, all confirms in flight together. `202` when all "
        "are confirmed; `207` otherwise, with each result's `status` one of `confirmed`, "
        "`invalid`, `unroutable`, `nacked`, `timeout` and a problem object saying whether "
        "a retry can succeed. An invalid message fails alone; the others go out."
    ),
    openapi_extra={"requestBody": BATCH_BODY},
    responses={
        202: BATCH_RESULTS,
        207: {**BATCH_RESULTS, "description": "Some messages were not confirmed"},
        **problem_responses(
            400, 401, 403, ExchangeNotFound, 408, 409, 413, 415, 422, 429, 431, 503
        ),
    },
)
async def publish_batch(exchange: str, request: Request) -> Response:
    timing = Timing()
    try:
        return await _publish_many(exchange, request, timing)
    except GatewayError as error:
        error.server_timing = timing.header()
        raise


async def _publish_many(exchange: str, request: Request, timing: Timing) -> Response:
    services = publish_services(request)
    caller = services.authenticator.publisher(request, exchange)
    publisher, settings = services.publisher, services.settings
    compose.check_exchange(exchange)
    kind = compose.media_type(request.headers)
    if kind not in (None, JSON_CONTENT_TYPE):
        raise UnsupportedMediaType(f"a batch is application/json, not {kind!r}")
    key = compose.idempotency_key(request.headers)
    raw = await read_capped(request, settings.max_batch_bytes)
    items = _messages(raw, settings.max_batch)
    context = services.context(exchange, caller, request.scope)
    results: list[dict[str, Any] | None] = [None] * len(items)
    outgoing: list[tuple[int, Outgoing]] = []
    for index, item in enumerate(items):
        field = f"messages.{index}"
        # Stable ids under a key: a retry of a partly failed batch republishes the same ids.
        default_id = context.keyed_message_id(key, f":{index}")
        try:
            envelope = validate_message(item, field)
            message = compose.from_envelope(envelope, context, default_id, f"{field}.")
        except ValidationFailed as exc:
            results[index] = _failed(index, _given_id(item), "invalid", exc)
        else:
            outgoing.append((index, message))
    timing.validated()

    async def publish() -> Answer:
        published: list[Confirmed | GatewayError] = []
        if outgoing:
            await publisher.prepare(exchange)
            published = await publisher.publish_batch([message for _, message in outgoing])
        timing.confirmed(
            max(
                (result.sent_at for result in published if isinstance(result, Confirmed)),
                default=time.perf_counter(),
            )
        )
        for (index, message), result in zip(outgoing, published, strict=True):
            if isinstance(result, Confirmed):
                results[index] = {
                    "index": index,
                    "message_id": message.message_id,
                    "status": "confirmed",
                }
            else:
                results[index] = _failed(index, message.message_id, _status_of(result), result)
        all_confirmed = all(result and result["status"] == "confirmed" for result in results)
        return Answer(202 if all_confirmed else 207, orjson.dumps({"results": results}))

    request.scope[ACCESS_MESSAGE_ID] = f"{len(outgoing)} of {len(items)} messages"
    request_parts = ("batch", exchange, raw)
    answer, replayed = await answer_once(
        services.idempotency_keys, caller.name, key, request_parts, publish
    )
    headers = {}
    if replayed:
        timing.replayed()
        headers["Idempotent-Replayed"] = "true"
    headers["Server-Timing"] = timing.header()
    return Response(
        answer.body, status_code=answer.status, media_type=JSON_CONTENT_TYPE, headers=headers
    )


def _messages(raw: bytes, max_batch: int) -> list[Any]:
    document = parse_json(raw)
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValidationFailed(
            'messages: the body is {"messages": [...]} with at least one message',
            errors=[{"field": "messages", "message": "a non-empty list", "type": "list_type"}],
        )
    if len(messages) > max_batch:
        raise ValidationFailed(
            f"messages: {len(messages)} messages; at most {max_batch} per batch",
            errors=[{"field": "messages", "message": f"at most {max_batch}", "type": "too_long"}],
        )
    return messages


def _status_of(error: GatewayError) -> str:
    if isinstance(error, Unroutable):
        return "unroutable"
    if isinstance(error, Nacked):
        return "nacked"
    if isinstance(error, BrokerError):
        # Timed out or the connection failed with the confirm outstanding: outcome unknown.
        return "timeout"
    if isinstance(error, ValidationFailed):
        return "invalid"
    return "nacked"


def _failed(index: int, message_id: str | None, status: str, error: GatewayError) -> dict[str, Any]:
    return {
        "index": index,
        "message_id": message_id,
        "status": status,
        "error": problem_body(error),
    }


def _given_id(item: object) -> str | None:
    given = item.get("message_id") if isinstance(item, dict) else None
    return given if isinstance(given, str) else None
