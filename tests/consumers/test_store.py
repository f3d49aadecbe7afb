"""The SQL store on real SQLite and PostgreSQL: idempotent saves and cursor reads."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from consumers.errors import InvalidCursor
from consumers.store import DeliveryRecord, SqlStore, open_store

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    yield opened
    await opened.close()


def record(queue: str, message_id: str, body: bytes = b'{"a": 1}') -> DeliveryRecord:
    return DeliveryRecord(
        queue=queue,
        message_id=message_id,
        exchange="orders",
        routing_key="order.created",
        headers={"tenant": "acme"},
        content_type="application/json",
        body=body,
        attempts=1,
    )


async def test_a_redelivered_message_adds_no_row(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, "a"), record(queue, "b")])
    await store.save([record(queue, "b"), record(queue, "c"), record(queue, "c")])

    assert await store.count(queue) == 3


async def test_the_same_message_in_two_queues_is_two_deliveries(store: SqlStore) -> None:
    message_id = uuid.uuid4().hex
    await store.save([record("audit", message_id), record("billing", message_id)])

    deliveries = await store.deliveries(message_id)
    assert sorted(delivery.queue for delivery in deliveries) == ["audit", "billing"]
    assert all(delivery.persisted_at.tzinfo is not None for delivery in deliveries)


async def test_pages_follow_the_store_order_with_a_cursor(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, f"m{index}") for index in range(5)])

    first = await store.page(queue, None, 2)
    second = await store.page(queue, first.next_cursor, 2)
    third = await store.page(queue, second.next_cursor, 2)

    seen = [message.message_id for page in (first, second, third) for message in page.messages]
    assert seen == ["m0", "m1", "m2", "m3", "m4"]
    assert third.next_cursor is None
    assert third.messages[-1].body == b'{"a": 1}'


async def test_a_foreign_cursor_is_refused(store: SqlStore) -> None:
    with pytest.raises(InvalidCursor):
        await store.page("q", "not-a-cursor", 10)


async def test_migrating_twice_is_harmless(database_url: str) -> None:
    first = await open_store(database_url)
    second = await open_store(database_url)
    await first.close()
    await second.close()
