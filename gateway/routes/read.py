"""Reading back what consumers stored: where a message is, and a queue's messages by cursor."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from gateway.announcer import Announcer
from gateway.auth import AnyCaller, ReadCaller
from gateway.deps import AnnouncerDep, KnownQueuesDep, StoreDep, TopologyDep
from gateway.errors import (
    Forbidden,
    MessageExpired,
    MessageNotFound,
    QueueNotFound,
    StoreUnavailable,
    ValidationFailed,
)
from gateway.openapi import problem_responses
from hareway.store import MessagePage, Messages, PushRecord, StoredMessage
from hareway.store.records import Delivery, parse_cursor
from hareway.wire import is_json_content_type

router = APIRouter(prefix="/v1", tags=["read"])


@router.get(
    "/messages/{message_id:path}",
    summary="Where a message is: stored or dead-lettered, by which queue, after how many "
    "tries, and for a pushed one whether its subscription's target took it",
    responses=problem_responses(
        401, Forbidden, MessageNotFound, MessageExpired, ValidationFailed, 429, StoreUnavailable
    ),
)
async def get_message(
    message_id: str, store: StoreDep, topology: TopologyDep, caller: AnyCaller
) -> dict[str, Any]:
    # Only the queues the caller may read: the others do not even show the message exists.
    deliveries = [
        delivery
        for delivery in await store.deliveries(message_id)
        if caller.may("read", delivery.queue)
    ]
    if not deliveries:
        raise MessageNotFound(f"no consumer has stored message {message_id!r} yet")
    if all(delivery.status == "expired" for delivery in deliveries):
        raise MessageExpired(
            f"message {message_id!r} was stored by "
            + ", ".join(
                f"{delivery.queue!r} and has expired under its retention "
                f"({topology.retention_of(delivery.queue).describe()})"
                for delivery in deliveries
            )
        )
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
                **_retry_view(delivery),
                **_push_view(delivery.push),
            }
            for delivery in deliveries
        ],
    }


def _retry_view(delivery: Delivery) -> dict[str, Any]:
    """A message on the retry ladder: why its last attempt failed, when it comes back."""
    if delivery.status != "retrying":
        return {}
    return {
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at and delivery.next_attempt_at.isoformat(),
    }


def _push_view(push: PushRecord | None) -> dict[str, Any]:
    """Where a pushed message is with its queue's subscription (docs/push.md); nothing for
    a queue without one, or before the first push."""
    if push is None:
        return {}
    return {
        "push": {
            "status": push.status,
            "attempts": push.attempts,
            "last_status": push.last_status,
            "last_error": push.last_error,
            "next_attempt_at": push.next_attempt_at and push.next_attempt_at.isoformat(),
            "updated_at": push.updated_at.isoformat(),
        }
    }


# The longest a long poll waits (SQS's is 20 s; SPEC.md: at most 30).
MAX_WAIT_S = 30


@router.get(
    "/queues/{queue:path}/messages",
    summary="Persisted messages of a queue in the order they were stored, by cursor; with "
    "`wait`, a long poll that answers as soon as a message after the cursor is stored",
    responses=problem_responses(
        401, Forbidden, QueueNotFound, ValidationFailed, 429, StoreUnavailable
    ),
)
async def list_queue_messages(
    queue: str,
    store: StoreDep,
    queues: KnownQueuesDep,
    announcer: AnnouncerDep,
    _caller: ReadCaller,
    after: Annotated[str | None, Query(description="the cursor of the last message seen")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="seconds to wait for a message after the cursor when there is none "
            "yet (long poll); the answer is an empty page when none came",
        ),
    ] = None,
) -> dict[str, Any]:
    if after is not None:
        parse_cursor(after)  # a bad cursor is 422 before anything waits
    await queues.ensure(queue)
    if not wait:
        page = await store.page(queue, after, limit)
    else:
        page = await _long_poll(store, announcer, queue, after, limit, wait)
    return {
        "messages": [message_view(message) for message in page.messages],
        "next_cursor": page.next_cursor,
        **retention_fields(page.oldest_cursor, page.gap),
    }


async def _long_poll(
    store: Messages,
    announcer: Announcer,
    queue: str,
    after: str | None,
    limit: int,
    wait_s: float,
) -> MessagePage:
    """Read, and while the page is empty wait for the queue's next commit, until `wait_s`
    has passed: no database connection is held while waiting (gateway/announcer.py)."""
    deadline = time.monotonic() + wait_s
    async with announcer.watching(queue) as watch:
        while True:
            watch.arm()
            page = await store.page(queue, after, limit)
            left = deadline - time.monotonic()
            # No wake before the deadline (or the gateway stops serving): the empty page.
            if page.messages or page.gap or left <= 0 or not await watch.wait(left):
                return page


def retention_fields(oldest_cursor: str | None, gap: bool) -> dict[str, Any]:
    """Once the queue's retention expired messages: `oldest_cursor`, from where nothing is
    missing, and `gap`, whether the reader's cursor is behind it (it missed some)."""
    if oldest_cursor is None:
        return {}
    return {"oldest_cursor": oldest_cursor, "gap": gap}


def message_view(message: StoredMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "headers": message.headers,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "attempts": message.attempts,
        "persisted_at": message.persisted_at.isoformat(),
        "cursor": message.cursor,
        **body_fields(message.content_type, message.body, message.content_encoding),
    }


def body_fields(
    content_type: str | None, body: bytes, content_encoding: str | None = None
) -> dict[str, Any]:
    """`body`: the JSON value of a JSON message; else `body_base64`: its bytes as they came
    (a poison message that claims JSON but is not, or a compressed one, included)."""
    if is_json_content_type(content_type) and content_encoding in (None, "", "identity"):
        try:
            return {"body": orjson.loads(body)}
        except orjson.JSONDecodeError:
            pass
    return {"body_base64": base64.b64encode(body).decode("ascii")}
