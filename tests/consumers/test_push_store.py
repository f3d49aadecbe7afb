"""Push outcomes in every store (memory, SQLite, PostgreSQL): the latest one per message,
shown with its delivery; a push dead letter lists and redrives like any other."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from hareway.store import DeliveryRecord, MemoryStore, PushRecord, Store, open_store


def record(queue: str, message_id: str) -> DeliveryRecord:
    return DeliveryRecord(
        queue=queue,
        message_id=message_id,
        exchange="orders",
        routing_key="order.created",
        headers={},
        content_type="application/json",
        body=b"{}",
        attempts=1,
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str | None:
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[Store]:
    if store_url is None:
        yield MemoryStore()
        return
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.timeout(30)
async def test_the_latest_outcome_is_shown_with_its_delivery(store: Store) -> None:
    queue, message_id = f"q-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, message_id), record(f"{queue}.other", message_id)])
    next_at = datetime(2030, 1, 1, tzinfo=UTC)
    retrying = PushRecord(queue, message_id, "retrying", 1, 503, "busy", next_at)
    await store.record_pushes([retrying])
    [pushed, other] = await store.deliveries(message_id)
    assert pushed.push is not None
    assert (pushed.push.status, pushed.push.last_status, pushed.push.next_attempt_at) == (
        "retrying",
        503,
        next_at,
    )
    assert other.push is None  # a queue without a subscription

    await store.record_pushes([dataclasses.replace(retrying, status="delivered", attempts=2)])
    [pushed, _] = await store.deliveries(message_id)
    assert pushed.status == "persisted"
    assert pushed.push is not None
    assert (pushed.push.status, pushed.push.attempts) == ("delivered", 2)


@pytest.mark.timeout(30)
async def test_a_push_dead_letter_is_a_dead_letter_of_its_queue(store: Store) -> None:
    queue, message_id = f"q-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, message_id)])
    error = "push: HTTP 422 from the target: no"
    await store.record_pushes([PushRecord(queue, message_id, "dead_lettered", 1, 422, error)])

    [delivery] = await store.deliveries(message_id)
    assert delivery.status == "dead_lettered"
    [dead] = (await store.dead_letters(queue, None, 10)).messages
    assert (dead.message_id, dead.last_error) == (message_id, error)
    # Redriven and stored again: a persisted row again, as for any dead letter.
    await store.save([dataclasses.replace(record(queue, message_id), attempts=1)])
    [delivery] = await store.deliveries(message_id)
    assert delivery.status == "persisted"
