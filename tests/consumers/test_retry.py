"""The retry ladder and dead letters on the real broker, for classic and quorum queues."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message
from tests.conftest import Names
from tests.consumers.support import (
    cleanup,
    retry_topology,
    running,
    settings_for,
    store_at,
    write_topology,
)
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually

pytestmark = [pytest.mark.parametrize("queue_type", ["classic", "quorum"])]


@pytest.fixture
async def ladder(
    names: Names, amqp: AbstractConnection, tmp_path: Path, queue_type: str
) -> AsyncIterator[Path]:
    document = retry_topology(names, queue_type)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


@pytest.mark.timeout(60)
async def test_failing_twice_then_succeeding_is_stored_once_after_three_attempts(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    app = Consumer()
    seen: list[tuple[int, float]] = []

    @app.handler(names.queue)
    async def flaky(message: Message, tx: AsyncConnection) -> None:
        seen.append((message.attempts, time.monotonic()))
        if message.attempts < 3:
            raise RuntimeError(f"not yet ({message.attempts})")

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        [message_id] = await publish_many(amqp, names.exchange, "order.created", 1)

        async def stored() -> bool:
            return await store.count(names.queue) == 1

        await eventually(stored, 20, "the message to be stored")
        [delivery] = await store.deliveries(message_id)

    assert [attempts for attempts, _ in seen] == [1, 2, 3]
    first_wait = seen[1][1] - seen[0][1]
    second_wait = seen[2][1] - seen[1][1]
    # The 200ms delay queue, then the 400ms one (generous upper bounds: shared machines).
    assert 0.2 <= first_wait < 3, first_wait
    assert 0.4 <= second_wait < 3, second_wait
    assert delivery.status == "persisted"
    assert delivery.attempts == 3
    # The stored route is the original one, not the default exchange it came back through.
    assert (delivery.exchange, delivery.routing_key) == (names.exchange, "order.created")


@pytest.mark.timeout(60)
async def test_always_failing_is_dead_lettered_with_its_last_error(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    app = Consumer()

    @app.handler(names.queue)
    def broken(message: Message, tx: Any) -> None:  # sync: runs in a worker thread
        raise ValueError(f"broken on attempt {message.attempts}")

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        [message_id] = await publish_many(amqp, names.exchange, "order.created", 1)

        async def dead() -> bool:
            return bool((await store.dead_letters(names.queue, None, 10)).messages)

        await eventually(dead, 20, "the dead letter")
        page = await store.dead_letters(names.queue, None, 10)
        [where] = await store.deliveries(message_id)

    [dead_letter] = page.messages
    assert dead_letter.message_id == message_id
    assert dead_letter.attempts == 3
    assert dead_letter.last_error == "ValueError: broken on attempt 3"
    assert where.status == "dead_lettered"
    # The dead-letter queue holds it too, for the management UI.
    assert await ready_count(amqp, f"{names.queue}.dlq") == 1
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.timeout(60)
async def test_a_poison_message_is_dead_at_once_and_the_consumer_goes_on(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    calls: list[str] = []
    app = Consumer()

    @app.handler(names.queue)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        calls.append(message.message_id)

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.exchange)
        for message_id, body in (("poison", b'{"n": 1'), ("good", b'{"n": 2}')):
            message = aio_pika.Message(body, content_type="application/json", message_id=message_id)
            await exchange.publish(message, routing_key="order.created")
        await channel.close()

        async def settled() -> bool:
            return len(await store.deliveries("poison") + await store.deliveries("good")) == 2

        await eventually(settled, 20, "both messages to be settled")
        [poison] = await store.deliveries("poison")
        [good] = await store.deliveries("good")
        [dead_letter] = (await store.dead_letters(names.queue, None, 10)).messages

    assert (poison.status, poison.attempts) == ("dead_lettered", 1)
    assert dead_letter.last_error is not None
    assert "not valid JSON" in dead_letter.last_error
    assert good.status == "persisted"
    assert calls == ["good"]  # the handler never saw the poison


@pytest.mark.timeout(60)
async def test_a_payload_failing_the_handlers_schema_is_dead_at_once(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    from pydantic import BaseModel

    class Order(BaseModel):
        n: int
        customer: str

    app = Consumer()

    @app.handler(names.queue, model=Order)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        raise AssertionError("never called: no message fits the schema")

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        [message_id] = await publish_many(amqp, names.exchange, "order.created", 1)

        async def dead() -> bool:
            return bool(await store.deliveries(message_id))

        await eventually(dead, 20, "the dead letter")
        [where] = await store.deliveries(message_id)
        [dead_letter] = (await store.dead_letters(names.queue, None, 10)).messages

    assert (where.status, where.attempts) == ("dead_lettered", 1)
    assert dead_letter.last_error is not None
    assert "customer" in dead_letter.last_error


@pytest.mark.timeout(60)
async def test_a_message_failing_the_topology_schema_is_dead_at_once(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    queue_type: str,
) -> None:
    document = retry_topology(names, queue_type)
    document["schemas"] = [
        {
            "exchange": names.exchange,
            "routing_key": "order.*",
            "schema": {
                "type": "object",
                "required": ["order_id"],
                "properties": {"order_id": {"type": "integer"}},
            },
        }
    ]
    topology = write_topology(tmp_path / "schemas.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology)
    try:
        async with running(settings, [names.queue]), store_at(sqlite_url) as store:
            channel = await amqp.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.exchange)
            for message_id, body in (("bad", b'{"order_id": "x"}'), ("good", b'{"order_id": 7}')):
                message = aio_pika.Message(
                    body, content_type="application/json", message_id=message_id
                )
                await exchange.publish(message, routing_key="order.created")
            await channel.close()

            async def settled() -> bool:
                return await store.count(names.queue) == 2

            await eventually(settled, 20, "both messages to be settled")
            [bad] = (await store.dead_letters(names.queue, None, 10)).messages
            [good] = await store.deliveries("good")
    finally:
        await cleanup(amqp, document)

    assert (bad.message_id, bad.attempts) == ("bad", 1)
    assert bad.last_error is not None
    assert bad.last_error.startswith("fails its schema: payload.order_id")
    assert good.status == "persisted"
