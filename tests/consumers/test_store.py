"""The SQL store on real SQLite and PostgreSQL: idempotent saves and cursor reads."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Text, cast, insert, select

from consumers.errors import InvalidCursor, StoreUnavailable
from consumers.store import DeliveryRecord, Redrive, SqlStore, open_store
from consumers.store.engine import create_engine
from consumers.store.schema import messages, redrives

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


def dead(queue: str, message_id: str, error: str = "boom", attempts: int = 3) -> DeliveryRecord:
    return dataclasses.replace(
        record(queue, message_id), status="dead_lettered", last_error=error, attempts=attempts
    )


async def test_duplicates_inside_one_batch_do_not_fail_it(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, "a"), record(queue, "a"), dead(queue, "b"), dead(queue, "b")])
    await store.save([dead(queue, "a"), record(queue, "b"), record(queue, "b")])

    assert await store.count(queue) == 2
    assert [d.status for d in await store.deliveries("a") if d.queue == queue] == ["persisted"]
    assert [d.status for d in await store.deliveries("b") if d.queue == queue] == ["persisted"]


async def test_a_redriven_dead_letter_that_succeeds_becomes_a_new_persisted_row(
    store: SqlStore,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([dead(queue, "x"), record(queue, "y")])
    reader_cursor = (await store.page(queue, None, 10)).messages[-1].cursor
    [listed] = (await store.dead_letters(queue, None, 10)).messages

    await store.save([record(queue, "x")])

    assert (await store.dead_letters(queue, None, 10)).messages == []
    # A reader past y's cursor still sees x: it was stored after, not in its old place.
    after = await store.page(queue, reader_cursor, 10)
    assert [message.message_id for message in after.messages] == ["x"]
    assert listed.last_error == "boom"
    assert listed.attempts == 3


async def test_dying_again_keeps_the_latest_error_and_never_buries_a_stored_message(
    store: SqlStore,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([dead(queue, "x", "first", 3), record(queue, "y")])
    await store.save([dead(queue, "x", "second", 2), dead(queue, "y", "late")])

    [x] = (await store.dead_letters(queue, None, 10)).messages
    assert (x.message_id, x.last_error, x.attempts) == ("x", "second", 2)
    assert [d.status for d in await store.deliveries("y") if d.queue == queue] == ["persisted"]


async def test_dead_letters_by_id_and_the_redrive_log(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([dead(queue, "a"), dead(queue, "b"), record(queue, "c")])

    everything = await store.dead_letters_by_id(queue, None)
    chosen = await store.dead_letters_by_id(queue, ["b", "c", "zzz"])
    await store.record_redrives([Redrive(queue, "b", "orders", "order.created", "bob")])

    assert [message.message_id for message in everything] == ["a", "b"]
    assert [message.message_id for message in chosen] == ["b"]
    async with store.engine.connect() as connection:
        rows = (await connection.execute(select(redrives).where(redrives.c.queue == queue))).all()
    assert [(row.message_id, row.redriven_by) for row in rows] == [("b", "bob")]


async def test_persisted_names_only_stored_messages(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await store.save([record(queue, "a"), dead(queue, "b")])
    async with store.transaction() as tx:
        assert await store.persisted(tx, queue, {"a", "b", "c"}) == {"a"}


async def test_an_unreachable_database_is_store_unavailable() -> None:
    unreachable = SqlStore(create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none"))
    with pytest.raises(StoreUnavailable):
        await unreachable.save([record("q", "a")])
    await unreachable.close()


@pytest.mark.parametrize("status", ["persisted", "dead_lettered"])
async def test_the_driver_level_insert_writes_what_sqlalchemy_would(
    store: SqlStore, status: str
) -> None:
    # SqlStore.write converts JSON and datetimes itself (see _DriverInsert): the stored
    # values must be the very ones SQLAlchemy's own bind processing would write.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    written = dataclasses.replace(
        record(queue, "a"),
        headers={"tenant": "acme", "n": 7, "nested": {"ok": True, "list": [1, "x"]}, "é": "ü"},
        body=b"\x00\xffraw",
        published_at=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        persisted_at=datetime(2026, 11, 24, 18, 0, 0, 120000, tzinfo=UTC),
        status=status,  # type: ignore[arg-type]
        last_error="boom" if status == "dead_lettered" else None,
    )
    reference = dataclasses.replace(written, queue=queue + "-sqlalchemy")
    await store.save([written])
    async with store.transaction() as tx:
        row = {
            field.name: getattr(reference, field.name) for field in dataclasses.fields(reference)
        }
        await tx.execute(insert(messages), [row])
    columns = [column for column in messages.c if column.name not in ("id", "queue")]
    async with store.engine.connect() as connection:
        rows = (
            await connection.execute(
                # As stored: text, not the Python values read back (the body stays bytes).
                select(
                    *(column if column.name == "body" else cast(column, Text) for column in columns)
                )
                .where(messages.c.queue.in_([queue, reference.queue]))
                .order_by(messages.c.queue)
            )
        ).all()
    assert len(rows) == 2
    assert rows[0] == rows[1]


async def test_a_write_can_stamp_its_own_time_on_every_row(store: SqlStore) -> None:
    # The consumer stamps the moment its batch goes in, not when each message arrived.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    arrived = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    written_at = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    records = [dataclasses.replace(record(queue, id_), persisted_at=arrived) for id_ in "ab"]
    async with store.transaction() as tx:
        await store.write(tx, records, written_at)
    page = await store.page(queue, None, 10)
    assert [message.persisted_at for message in page.messages] == [written_at, written_at]
