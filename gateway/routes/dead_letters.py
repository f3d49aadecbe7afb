"""Dead letters: list them without consuming them, and redrive them to where they came from."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from gateway.auth import AdminCaller, ReadCaller
from gateway.deps import KnownQueuesDep, PublisherDep, StoreDep
from gateway.errors import (
    Forbidden,
    GatewayError,
    QueueNotFound,
    StoreUnavailable,
    ValidationFailed,
)
from gateway.openapi import problem_responses
from gateway.problems import problem_body
from gateway.publisher import Outgoing
from gateway.routes.read import body_fields, retention_fields
from hareway.store import DeadLetterMessage, Redrive
from hareway.wire import DEFAULT_EXCHANGE_ALIAS, JSON_CONTENT_TYPE

router = APIRouter(prefix="/v1", tags=["dead letters"])

# With API keys configured the key's name says who redrove; without, the caller may name itself.
ACTOR_HEADER = "X-Hareway-Actor"
# Redrive publishes with confirms in flight together, this many at a time.
_IN_FLIGHT = 100


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, description="the dead letters to redrive; omitted or null: all of them"
    )
    limit: int = Field(default=1000, ge=1, le=10_000, description="redrive at most this many")


@router.get(
    "/queues/{queue:path}/dead-letters",
    summary="Dead-lettered messages of a queue with their last error, without consuming them",
    responses=problem_responses(
        401, Forbidden, QueueNotFound, ValidationFailed, 429, StoreUnavailable
    ),
)
async def list_dead_letters(
    queue: str,
    store: StoreDep,
    queues: KnownQueuesDep,
    _caller: ReadCaller,
    after: Annotated[str | None, Query(description="the cursor of the last one seen")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    await queues.ensure(queue)
    page = await store.dead_letters(queue, after, limit)
    return {
        "dead_letters": [_view(message) for message in page.messages],
        "next_cursor": page.next_cursor,
        **retention_fields(page.oldest_cursor, page.gap),
    }


@router.post(
    "/queues/{queue:path}/dead-letters/redrive",
    summary="Re-publish dead letters (all, or by id) to their original exchange and routing key",
    responses={
        200: {"description": "Every dead letter asked for was re-published and confirmed"},
        207: {"description": "Some could not be re-published; each result says why"},
        **problem_responses(401, Forbidden, QueueNotFound, ValidationFailed, 429, StoreUnavailable),
    },
)
async def redrive(
    queue: str,
    store: StoreDep,
    publisher: PublisherDep,
    queues: KnownQueuesDep,
    caller: AdminCaller,
    request: RedriveRequest | None = None,
    actor: Annotated[str | None, Header(alias=ACTOR_HEADER, max_length=255)] = None,
) -> Response:
    request = request or RedriveRequest()
    await queues.ensure(queue)
    found = await store.dead_letters_by_id(queue, request.message_ids)
    found = found[: request.limit]
    limit = asyncio.Semaphore(_IN_FLIGHT)

    async def one(message: DeadLetterMessage) -> GatewayError | None:
        async with limit:
            try:
                await publisher.publish(_outgoing(message))
            except GatewayError as exc:
                return exc
            return None

    errors = await asyncio.gather(*(one(message) for message in found))
    who = (actor or caller.name) if caller.open_access else caller.name
    await store.record_redrives(
        [
            Redrive(queue, message.message_id, message.exchange, message.routing_key, who)
            for message, error in zip(found, errors, strict=True)
            if error is None
        ]
    )
    results = [_result(message, error) for message, error in zip(found, errors, strict=True)]
    known = {message.message_id for message in found}
    missing = [mid for mid in dict.fromkeys(request.message_ids or []) if mid not in known]
    body = {"redriven_by": who, "results": results, "not_found": missing}
    status = 200 if all(error is None for error in errors) else 207
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_CONTENT_TYPE)


def _outgoing(message: DeadLetterMessage) -> Outgoing:
    # No attempt header: the redriven message starts the ladder afresh.
    return Outgoing(
        exchange=message.exchange or DEFAULT_EXCHANGE_ALIAS,
        routing_key=message.routing_key,
        body=message.body,
        message_id=message.message_id,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
    )


def _result(message: DeadLetterMessage, error: GatewayError | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "message_id": message.message_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "status": "confirmed" if error is None else "failed",
    }
    if error is not None:
        result["error"] = problem_body(error)
    return result


def _view(message: DeadLetterMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "headers": message.headers,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "dead_lettered_at": message.dead_lettered_at.isoformat(),
        "cursor": message.cursor,
        **body_fields(message.content_type, message.body, message.content_encoding),
    }
