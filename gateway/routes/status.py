"""`GET /v1/queues`: every queue of the topology the caller may read, with what the broker
holds of it (ready messages, consumers, messages waiting on its retry ladder) and the
dead letters its store keeps (`hareway status` prints it).

An answer even while the broker or the store is down: their counts are then null and
`broker` / `store` say `unavailable`, so an operator sees which side is out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from gateway.auth import AnyCaller
from gateway.deps import PublisherDep, StoreDep, TopologyDep
from gateway.errors import BrokerError
from gateway.openapi import problem_responses
from gateway.publisher import Publisher, QueueCounts
from hareway.store import Messages, StoreError
from hareway.topology import QueueSpec, dead_letter_queue_name, delay_queue_name

router = APIRouter(prefix="/v1", tags=["read"])

# Lookups in flight at once: a topology of hundreds of queues is not a burst on the broker.
_AT_ONCE = 16


class _Health:
    def __init__(self) -> None:
        self.broker = "ready"
        self.store = "ready"


@router.get(
    "/queues",
    summary="The topology's queues with their depth, consumers, retrying and dead letters",
    responses=problem_responses(401, 429),
)
async def queues(
    caller: AnyCaller, publisher: PublisherDep, store: StoreDep, topology: TopologyDep
) -> dict[str, Any]:
    health, slots = _Health(), asyncio.Semaphore(_AT_ONCE)
    readable = [queue for queue in topology.queues if caller.may("read", queue.name)]

    async def one(queue: QueueSpec) -> dict[str, Any]:
        async with slots:
            return await _queue(queue, publisher, store, health)

    listed = await asyncio.gather(*(one(queue) for queue in readable))
    return {"broker": health.broker, "store": health.store, "queues": listed}


async def _queue(
    queue: QueueSpec, publisher: Publisher, store: Messages, health: _Health
) -> dict[str, Any]:
    counts = await _counts(publisher, queue.name, health)
    ladder: list[int | None] = []
    dead_letter_queue: int | None = None
    if queue.retry is not None:
        delays = dict.fromkeys(queue.retry.delays)
        for delay in delays:
            held = await _counts(publisher, delay_queue_name(queue.name, delay), health)
            ladder.append(None if held is None else held.messages)
        held = await _counts(publisher, dead_letter_queue_name(queue.name), health)
        dead_letter_queue = None if held is None else held.messages
    try:
        dead_letters: int | None = await store.dead_letter_count(queue.name)
    except StoreError:
        health.store, dead_letters = "unavailable", None
    return {
        "queue": queue.name,
        "type": queue.type,
        "messages": None if counts is None else counts.messages,
        "consumers": None if counts is None else counts.consumers,
        # On the retry ladder's delay queues, waiting for their next attempt.
        "retrying": None if None in ladder else sum(n for n in ladder if n is not None),
        "dead_letters": dead_letters,
        "dead_letter_queue_messages": dead_letter_queue,
    }


async def _counts(publisher: Publisher, queue: str, health: _Health) -> QueueCounts | None:
    try:
        return await publisher.queue_counts(queue)
    except BrokerError:
        health.broker = "unavailable"
        return None
