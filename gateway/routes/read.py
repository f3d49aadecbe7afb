"""Reading back what consumers stored: where a message is, and a queue's messages by cursor."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from consumers.store import StoredMessage
from gateway.auth import AnyCaller, ReadCaller
from gateway.deps import StoreDep
from gateway.errors import MessageNotFound
from gateway.openapi import problem_responses
from hareway.wire import is_json_content_type

router = APIRouter(prefix="/v1", tags=["read"])


@router.get(
    "/messages/{message_id}",
    summary="Where a message is: stored or dead-lettered, by which queue, after how many tries",
    responses=problem_responses(401, 403, 404, 422, 429),
)
async def get_message(message_id: str, store: StoreDep, caller: AnyCaller) -> dict[str, Any]:
    # Only the queues the caller may read: the others do not even show the message exists.
    deliveries = [
        delivery
        for delivery in await store.deliveries(message_id)
        if caller.may("read", delivery.queue)
    ]
    if not deliveries:
        raise MessageNotFound(f"no consumer has stored message {message_id!r} yet")
    return {
        "message_id": message_id,
        "deliveries": [
            {
                "queue": delivery.queue,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "exchange": delivery.exchange,
                "routing_key": delivery.routing_key,
                "persisted_at": delivery.persisted_at.isoformat(),
            }
            for delivery in deliveries
        ],
    }


@router.get(
    "/queues/{queue}/messages",
    summary="Persisted messages of a queue in the order they were stored, by cursor",
    responses=problem_responses(401, 403, 422, 429),
)
async def list_queue_messages(
    queue: str,
    store: StoreDep,
    _caller: ReadCaller,
    after: Annotated[str | None, Query(description="the cursor of the last message seen")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    page = await store.page(queue, after, limit)
    return {
        "messages": [_message_view(message) for message in page.messages],
        "next_cursor": page.next_cursor,
    }


def _message_view(message: StoredMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "headers": message.headers,
        "content_type": message.content_type,
        "attempts": message.attempts,
        "persisted_at": message.persisted_at.isoformat(),
        "cursor": message.cursor,
        **body_fields(message.content_type, message.body),
    }


def body_fields(content_type: str | None, body: bytes) -> dict[str, Any]:
    """`body`: the JSON value of a JSON message; else `body_base64`: its bytes as they came
    (a poison message that claims JSON but is not included)."""
    if is_json_content_type(content_type):
        try:
            return {"body": orjson.loads(body)}
        except orjson.JSONDecodeError:
            pass
    return {"body_base64": base64.b64encode(body).decode("ascii")}
