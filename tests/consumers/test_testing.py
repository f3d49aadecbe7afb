"""The consumer runtime's batch and retry logic through `consumers.testing.TestConsumer`,
on SQLite and on the in-memory store: no broker. What the broker adds (acks, delay
queues, requeues) is tested against it beside these (test_retry.py, test_worker.py)."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, DeadLetter, Message, SyncTransaction
from consumers.errors import StoreUnavailable
from consumers.testing import TestConsumer
from hareway.store import MemoryStore
from hareway.topology import Topology

QUEUE = "orders.persist"
TOPOLOGY = Topology.model_validate(
    {
        "exchanges": [{"name": "orders"}],
        "queues": [
            {"name": QUEUE, "retry": {"delays": ["200ms", "1s"], "max_attempts": 3}},
            {"name": "plain"},
        ],
        "bindings": [{"exchange": "orders", "queue": QUEUE, "routing_key": "order.#"}],
        "schemas": [
            {
                "exchange": "orders",
                "routing_key": "order.checked",
                "schema": {"type": "object", "required": ["order_id"]},
            }
        ],
    }
)
effects = sa.Table(
    "effects",
    sa.MetaData(),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
)


def failing(times: int, seen: list[Message]) -> Consumer:
    """A consumer whose handler writes a row, then fails its first `times` attempts."""
    app = Consumer()

    @app.handler(QUEUE)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        seen.append(message)
        await tx.execute(
            effects.insert().values(message_id=message.message_id, attempt=message.attempts)
        )
        if message.attempts <= times:
            raise RuntimeError(f"attempt {message.attempts} failed")

    return app


async def test_a_failing_handler_is_retried_down_the_ladder_and_its_writes_taken_back() -> None:
    seen: list[Message] = []
    async with TestConsumer(failing(2, seen), topology=TOPOLOGY) as consumer:
        await consumer.run_sync(effects.metadata.create_all)
        outcome = await consumer.deliver(
            QUEUE,
            {"order_id": 1},
            message_id="m-1",
            exchange="orders",
            routing_key="order.created",
            headers={"tenant": "acme"},
        )
        rows = await consumer.execute(sa.select(effects.c.message_id, effects.c.attempt))

    assert (outcome.status, outcome.attempts, outcome.delays_ms) == ("persisted", 3, [200, 1000])
    assert outcome.errors == ["RuntimeError: attempt 1 failed", "RuntimeError: attempt 2 failed"]
    # Each retry comes back by the default exchange: the first route travels in headers.
    assert {(m.exchange, m.routing_key) for m in seen} == {("orders", "order.created")}
    assert [m.attempts for m in seen] == [1, 2, 3]
    assert all(m.headers == {"tenant": "acme"} for m in seen)
    assert [tuple(row) for row in rows] == [("m-1", 3)]


async def test_out_of_attempts_is_a_dead_letter_with_the_last_error() -> None:
    async with TestConsumer(failing(5, []), topology=TOPOLOGY) as consumer:
        await consumer.run_sync(effects.metadata.create_all)
        outcome = await consumer.deliver(QUEUE, {"order_id": 1}, message_id="m-2")
        [dead] = (await consumer.store.dead_letters(QUEUE, None, 10)).messages
        rows = await consumer.execute(sa.select(effects))

    assert (outcome.status, outcome.attempts) == ("dead_lettered", 3)
    assert (dead.message_id, dead.attempts, dead.last_error) == (
        "m-2",
        3,
        "RuntimeError: attempt 3 failed",
    )
    assert rows == []


async def test_a_queue_without_a_ladder_dead_letters_the_first_failure() -> None:
    app = Consumer()

    @app.handler("plain")
    async def handle(message: Message, tx: AsyncConnection) -> None:
        raise RuntimeError("no")

    async with TestConsumer(app, topology=TOPOLOGY) as consumer:
        outcome = await consumer.deliver("plain", {"n": 1})
    assert (outcome.status, outcome.attempts, outcome.delays_ms) == ("dead_lettered", 1, [])


async def test_dead_letter_and_a_failed_model_skip_the_ladder() -> None:
    from pydantic import BaseModel

    class Order(BaseModel):
        order_id: int

    app = Consumer()

    @app.handler(QUEUE, model=Order)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        if message.payload.order_id == 7:
            raise DeadLetter("order 7 refers to no customer")

    async with TestConsumer(app, topology=TOPOLOGY) as consumer:
        refused = await consumer.deliver(QUEUE, {"order_id": 7})
        invalid = await consumer.deliver(QUEUE, {"order_id": "seven"})
        fine = await consumer.deliver(QUEUE, {"order_id": 8})

    assert (refused.status, refused.attempts) == ("dead_lettered", 1)
    assert refused.last_error == "order 7 refers to no customer"
    assert (invalid.status, invalid.attempts) == ("dead_lettered", 1)
    assert "fails the schema Order" in str(invalid.last_error)
    assert fine.status == "persisted"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"body": b"{not json"}, "not valid JSON"),
        ({"payload": {"n": 1}, "exchange": "orders", "routing_key": "order.checked"}, "schema"),
        ({"body": b"\x1f\x8b broken", "content_encoding": "gzip"}, "content_encoding gzip"),
    ],
)
async def test_what_can_never_succeed_goes_to_the_dead_letters_at_once(
    fields: dict[str, Any], reason: str
) -> None:
    seen: list[Message] = []
    async with TestConsumer(failing(0, seen), topology=TOPOLOGY) as consumer:
        outcome = await consumer.deliver(QUEUE, **fields)
    assert (outcome.status, outcome.attempts) == ("dead_lettered", 1)
    assert reason in str(outcome.last_error)
    assert seen == []


async def test_a_compressed_body_reaches_the_handler_inflated_and_is_stored_as_it_came() -> None:
    payloads: list[Any] = []
    app = Consumer()

    @app.handler(QUEUE)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        payloads.append(message.payload)

    body = gzip.compress(b'{"order_id": 5}')
    async with TestConsumer(app, topology=TOPOLOGY) as consumer:
        outcome = await consumer.deliver(QUEUE, body=body, content_encoding="gzip")
        [stored] = (await consumer.store.page(QUEUE, None, 10)).messages
    assert outcome.status == "persisted"
    assert payloads == [{"order_id": 5}]
    assert (stored.body, stored.content_encoding) == (body, "gzip")


async def test_a_repeat_runs_no_handler_and_another_body_is_a_conflict() -> None:
    seen: list[Message] = []
    async with TestConsumer(failing(0, seen), topology=TOPOLOGY) as consumer:
        await consumer.run_sync(effects.metadata.create_all)
        first = await consumer.deliver(QUEUE, {"v": 1}, message_id="same")
        repeat = await consumer.deliver(QUEUE, {"v": 1}, message_id="same")
        other = await consumer.deliver(QUEUE, {"v": 2}, message_id="same")
        deliveries = await consumer.store.deliveries("same")
    assert (first.status, repeat.status, other.status) == ("persisted", "persisted", "conflict")
    assert len(seen) == 1
    assert [d.status for d in deliveries] == ["persisted", "conflict"]


async def test_a_sync_handler_runs_in_a_worker_thread_on_the_same_transaction() -> None:
    threads: list[threading.Thread] = []
    app = Consumer()

    @app.handler(QUEUE)
    def handle(message: Message, tx: SyncTransaction) -> None:
        threads.append(threading.current_thread())
        tx.execute(effects.insert().values(message_id=message.message_id, attempt=1))

    async with TestConsumer(app, topology=TOPOLOGY) as consumer:
        await consumer.run_sync(effects.metadata.create_all)
        await consumer.deliver(QUEUE, {"n": 1}, message_id="t-1")
        rows = await consumer.execute(sa.select(effects.c.message_id))
    assert threads
    assert threads[0] is not threading.main_thread()
    assert [tuple(row) for row in rows] == [("t-1",)]


async def test_on_the_memory_store_a_handler_runs_without_sql_and_sql_is_refused() -> None:
    store = MemoryStore()
    app = Consumer()

    @app.handler(QUEUE)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        if message.payload == {"sql": True}:
            await tx.execute(sa.text("SELECT 1"))

    async with TestConsumer(app, topology=TOPOLOGY, store=store) as consumer:
        fine = await consumer.deliver(QUEUE, {"sql": False})
        sql = await consumer.deliver(QUEUE, {"sql": True})
    assert fine.status == "persisted"
    assert (sql.status, sql.attempts) == ("dead_lettered", 3)
    assert "runs no SQL" in str(sql.last_error)
    assert await store.count(QUEUE) == 2


async def test_values_the_store_refuses_are_dead_lettered_alone() -> None:
    store = MemoryStore()
    store.refuse = lambda record: "NUL in text" if "\x00" in record.message_id else None
    async with TestConsumer(topology=TOPOLOGY, store=store) as consumer:
        outcome = await consumer.deliver(QUEUE, {"n": 1}, message_id="a\x00b")
        fine = await consumer.deliver(QUEUE, {"n": 2}, message_id="ok")
    assert outcome.status == "dead_lettered"
    assert str(outcome.last_error).startswith("the store refused it: NUL in text")
    assert fine.status == "persisted"
    assert [d.message_id for d in (await store.dead_letters(QUEUE, None, 10)).messages] == [
        "a\\x00b"
    ]


async def test_a_store_that_is_down_keeps_the_message_unsettled() -> None:
    store = MemoryStore()
    store.down = True
    async with TestConsumer(topology=TOPOLOGY, store=store) as consumer:
        with pytest.raises(StoreUnavailable):
            await consumer.deliver(QUEUE, {"n": 1})
