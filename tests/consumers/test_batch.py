"""A batch the store refuses for its data is narrowed down to the messages that cause it:
they are refused alone, everything else commits. A store that refuses everything is out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from aiormq.abc import DeliveredMessage
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.app import Registration
from consumers.batch import BatchProcessor, Item
from consumers.decode import Decoded
from consumers.errors import StoreUnavailable
from consumers.message import Message
from hareway.store import DeliveryRecord, SqlStore
from hareway.store.schema import messages
from hareway.wire import printable
from tests.consumers.support import store_at


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    async with store_at(database_url) as opened:
        yield opened


def item(queue: str, message_id: str, **fields: Any) -> Item:
    defaults: dict[str, Any] = {
        "exchange": "orders",
        "routing_key": "order.created",
        "headers": {},
        "content_type": "application/json",
        "body": b"{}",
        "attempts": 1,
    }
    record = DeliveryRecord(queue=queue, message_id=message_id, **(defaults | fields))
    # The processor reads only the decoded record; the delivery is the worker's, for acks.
    return Item(Decoded(record), cast(DeliveredMessage, None))


async def stored(store: SqlStore, queue: str) -> dict[str, tuple[str, str | None]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(messages.c.message_id, messages.c.status, messages.c.last_error).where(
                messages.c.queue == queue
            )
        )
        return {row.message_id: (row.status, row.last_error) for row in rows}


def offender(store: SqlStore) -> str:
    """An id this store refuses as it is: a lone surrogate no driver encodes, and on
    PostgreSQL also NUL, which its text refuses."""
    return "bad-\x00\ud800" if store.engine.dialect.name == "postgresql" else "bad-\ud800"


async def test_offenders_are_dead_lettered_alone_and_the_rest_commits(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    bad = offender(store)
    items = [item(queue, f"m-{n}") for n in range(40)]
    items[7] = item(queue, bad + "7")
    items[30] = item(queue, bad + "30")
    processor = BatchProcessor(store, queue, None, lambda attempts: 1000)

    outcome = await processor.process(items)

    assert outcome.stored == 38
    assert sorted(failure.item.decoded.record.message_id for failure in outcome.failures) == [
        bad + "30",
        bad + "7",
    ]
    # No handler ran: the same values fail every time, so no retry, straight to the dead letters.
    assert {failure.delay_ms for failure in outcome.failures} == {None}
    assert outcome.commits > 2  # narrowed down by halves
    rows = await stored(store, queue)
    assert all(rows[f"m-{n}"] == ("persisted", None) for n in range(40) if n not in (7, 30))
    for message_id in (bad + "7", bad + "30"):
        status, error = rows[printable(message_id)]
        assert status == "dead_lettered"
        assert error is not None
        assert error.startswith("the store refused it")


async def test_a_store_that_refuses_everything_is_out_and_dead_letters_nothing(
    tmp_path: Any,
) -> None:
    async with store_at(f"sqlite+aiosqlite:///{tmp_path / 'gone.db'}") as broken:
        async with broken.engine.begin() as connection:
            await connection.execute(sa.text("DROP TABLE messages"))
        processor = BatchProcessor(broken, "q", None, lambda attempts: None)
        with pytest.raises(StoreUnavailable):
            await processor.process([item("q", "a"), item("q", "b")])


async def test_a_handlers_own_sql_error_is_a_retry_not_an_outage(store: SqlStore) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    missing = sa.Table("no_such_table_here", sa.MetaData(), sa.Column("id", sa.String(9)))

    async def handler(message: Message, tx: AsyncConnection) -> None:
        if message.message_id == "fails":
            await tx.execute(missing.insert().values(id="x"))

    processor = BatchProcessor(
        store, queue, Registration(queue, handler), lambda attempts: 1000 * attempts
    )
    outcome = await processor.process(
        [item(queue, "ok-1"), item(queue, "fails"), item(queue, "ok-2")]
    )

    assert outcome.stored == 2
    (failure,) = outcome.failures
    assert failure.item.decoded.record.message_id == "fails"
    assert failure.delay_ms == 1000
    assert "no_such_table_here" in failure.error
    assert set(await stored(store, queue)) == {"ok-1", "ok-2"}


async def test_a_conflicting_body_is_kept_and_a_redelivery_is_not_a_conflict(
    store: SqlStore,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    processor = BatchProcessor(store, queue, None, lambda attempts: None)
    first = await processor.process([item(queue, "same", body=b'{"v": 1}')])
    assert (first.stored, first.conflicts) == (1, [])
    again = await processor.process(
        [item(queue, "same", body=b'{"v": 1}'), item(queue, "same", body=b'{"v": 2}')]
    )
    assert [record.body for record in again.conflicts] == [b'{"v": 2}']
    deliveries = await store.deliveries("same")
    assert [(d.queue, d.status) for d in deliveries if d.queue == queue] == [
        (queue, "persisted"),
        (queue, "conflict"),
    ]
    # The same conflicting message redelivered is not kept twice.
    await processor.process([item(queue, "same", body=b'{"v": 2}')])
    assert await store.conflicts(queue) == 1
