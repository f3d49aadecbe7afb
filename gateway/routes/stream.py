"""`GET /v1/queues/{queue}/stream`: a queue's stored messages as Server-Sent Events.

Each event is one message: `event: message`, `id:` its cursor, `data:` the same JSON object
a listing gives for it; a stream that starts behind what the queue's retention expired
begins with `event: gap`, `data: {"gap": true, "oldest_cursor": ...}`. A stream starts
after `?after=` (or at the queue's beginning), and
a reconnecting client's `Last-Event-ID` wins over it: it resumes exactly after the last
event the client saw, on this gateway or another. The store is read a page at a time
(`STREAM_PAGE_SIZE`), so a stream's memory stays the same however long the queue; between
pages that find nothing the stream waits for the queue's next commit without a database
connection (gateway/announcer.py), and sse-starlette sends a comment line every
`STREAM_HEARTBEAT_S` so idle streams survive proxies. A stream ends when the gateway stops
serving (the drain, gateway/drain.py); the client reconnects with its `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.announcer import Announcer
from gateway.auth import ReadCaller
from gateway.deps import AnnouncerDep, KnownQueuesDep, SettingsDep, StoreDep
from gateway.errors import Forbidden, QueueNotFound, StoreUnavailable, ValidationFailed
from gateway.openapi import problem_responses
from gateway.routes.read import message_view
from hareway.store import MessagePage, Messages, StoreError
from hareway.store.records import parse_cursor

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["read"])


@router.get(
    "/queues/{queue:path}/stream",
    summary="A queue's stored messages as Server-Sent Events from a cursor; "
    "`Last-Event-ID` resumes after the last event seen",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `event: message`, `id: <cursor>`, `data:` "
            "the message as a listing shows it; first `event: gap` when the cursor is behind "
            "what retention expired; comment lines as heartbeats",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(401, Forbidden, QueueNotFound, ValidationFailed, 429, StoreUnavailable),
    },
)
async def stream_queue(
    queue: str,
    store: StoreDep,
    queues: KnownQueuesDep,
    announcer: AnnouncerDep,
    settings: SettingsDep,
    _caller: ReadCaller,
    after: Annotated[str | None, Query(description="start after this cursor")] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="the id (cursor) of the last event seen: resume after it",
        ),
    ] = None,
) -> EventSourceResponse:
    start = last_event_id or after
    if start is not None:
        parse_cursor(start)  # 422 before the stream starts
    await queues.ensure(queue)
    # The first page too: a store that is down answers 503 rather than an empty stream.
    first = await store.page(queue, start, settings.stream_page_size)
    return EventSourceResponse(
        _events(store, announcer, queue, start, settings.stream_page_size, first),
        ping=settings.stream_heartbeat_s,
    )


async def _events(
    store: Messages,
    announcer: Announcer,
    queue: str,
    cursor: str | None,
    page_size: int,
    page: MessagePage,
) -> AsyncIterator[ServerSentEvent]:
    async with announcer.watching(queue) as watch:
        # The first page was read before this watch was armed: read once more before
        # waiting, or a commit in between would wait for the next one.
        armed = False
        if page.gap:
            # Behind what the queue's retention expired: said once, as a listing's `gap`
            # says it. No id, so a reconnect still resumes after the last message seen.
            yield ServerSentEvent(
                data=orjson.dumps({"gap": True, "oldest_cursor": page.oldest_cursor}).decode(),
                event="gap",
            )
        while True:
            for message in page.messages:
                yield ServerSentEvent(
                    data=orjson.dumps(message_view(message)).decode(),
                    id=message.cursor,
                    event="message",
                )
                cursor = message.cursor
            # Caught up: wait for the queue's next commit (or the gateway stopping).
            if page.next_cursor is None and armed and not await watch.wait(None):
                return
            watch.arm()
            armed = True
            try:
                # Shielded: a client that leaves mid-read cancels the stream, and a
                # cancelled query would make SQLAlchemy throw its connection away.
                page = await asyncio.shield(store.page(queue, cursor, page_size))
            except StoreError as exc:
                # The client reconnects with its Last-Event-ID and gets a 503 until the
                # store is back: better than a stream that says nothing.
                log.warning("a stream of %s ends: the store failed: %s", queue, exc)
                return
