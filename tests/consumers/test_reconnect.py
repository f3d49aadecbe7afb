"""Broker faults under a running consumer, on a RabbitMQ node of the test's own: the
connection closed by the broker, the node killed and restarted. Each time the consumer
consumes again on the new channel and every message ends up stored exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message
from hareway.topology import Topology, declare_topology
from tests.conftest import Names
from tests.consumers.support import running, settings_for, store_at, write_topology
from tests.support.broker import publish_many
from tests.support.processes import eventually
from tests.support.rabbit_node import RabbitNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

COUNT = 3000


@pytest.fixture
def node(rabbit_node: RabbitNode) -> RabbitNode:
    return rabbit_node


def slow_app(queue: str) -> Consumer:
    app = Consumer()

    @app.handler(queue)
    async def take_time(message: Message, tx: AsyncConnection) -> None:
        await asyncio.sleep(0.0005)  # slow enough that the fault lands mid-stream

    return app


async def queue_depth(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of the queue."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        ready = declared.declaration_result.message_count or 0
        consumers = declared.declaration_result.consumer_count or 0
        return ready, consumers
    finally:
        await connection.close()


@pytest.mark.parametrize("fault", ["close_connections", "kill_node"])
async def test_a_broker_fault_mid_stream_loses_nothing_and_stores_nothing_twice(
    node: RabbitNode, names: Names, tmp_path: Path, fault: str
) -> None:
    document = names.topology()
    topology = write_topology(tmp_path / "topology.yaml", document)
    setup = await aio_pika.connect(node.url)
    await declare_topology(setup, Topology.model_validate(document))
    published = await publish_many(setup, names.exchange, "order.created", COUNT)
    await setup.close()

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hareway.db'}"
    settings = settings_for(node.url, database_url, topology, prefetch=200, batch_size=100)
    async with store_at(database_url) as store:
        async with running(settings, [names.queue], slow_app(names.queue)):

            async def some_stored() -> bool:
                return await store.count(names.queue) >= 300

            await eventually(some_stored, 30, "the first rows")
            at_fault = await store.count(names.queue)
            if fault == "close_connections":
                await node.ctl("close_all_connections", "a test closes it")
            else:
                await node.kill()
                await asyncio.sleep(1)
                await node.start_again()

            async def all_stored() -> bool:
                return await store.count(names.queue) >= COUNT

            await eventually(all_stored, 120, "every message after the fault")
            ready, consumers = await queue_depth(node.url, names.queue)
        assert at_fault < COUNT, "the consumer finished before the fault; the test proved nothing"
        page = await store.page(names.queue, None, COUNT + 1)
    seen = [message.message_id for message in page.messages]
    assert sorted(seen) == sorted(published)  # each once: nothing lost, nothing twice
    assert ready == 0
    assert consumers == 1  # consuming again after the fault, and only once


@pytest.mark.timeout(60)
async def test_a_queue_deleted_and_declared_again_is_consumed_again(
    rabbitmq_url: str,
    names: Names,
    amqp: aio_pika.abc.AbstractConnection,
    tmp_path: Path,
) -> None:
    document = names.topology()
    topology = write_topology(tmp_path / "topology.yaml", document)
    await declare_topology(amqp, Topology.model_validate(document))
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hareway.db'}"
    settings = settings_for(rabbitmq_url, database_url, topology)
    async with store_at(database_url) as store, running(settings, [names.queue]):
        await publish_many(amqp, names.exchange, "order.created", 10, id_prefix="a")

        async def stored(count: int) -> bool:
            return await store.count(names.queue) >= count

        await eventually(lambda: stored(10), 20, "the first rows")
        # The broker cancels the consumer of a deleted queue (Basic.Cancel).
        channel = await amqp.channel()
        await channel.queue_delete(names.queue)
        await channel.close()
        await declare_topology(amqp, Topology.model_validate(document))
        await publish_many(amqp, names.exchange, "order.created", 10, id_prefix="b")
        await eventually(lambda: stored(20), 30, "the rows after the queue came back")


async def test_with_two_addresses_the_consumer_fails_over_when_its_node_dies(
    node: RabbitNode,
    rabbitmq_url: str,
    names: Names,
    amqp: aio_pika.abc.AbstractConnection,
    tmp_path: Path,
) -> None:
    # The shared broker stands in for a cluster's other node: the same queue, under this
    # test's own names (removed after it).
    document = names.topology()
    topology = write_topology(tmp_path / "topology.yaml", document)
    setup = await aio_pika.connect(node.url)
    await declare_topology(setup, Topology.model_validate(document))
    first = await publish_many(setup, names.exchange, "order.created", 50, id_prefix="node")
    await setup.close()
    await declare_topology(amqp, Topology.model_validate(document))

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hareway.db'}"
    settings = settings_for(f"{node.url},{rabbitmq_url}", database_url, topology)
    async with store_at(database_url) as store, running(settings, [names.queue]):

        async def stored(count: int) -> bool:
            return await store.count(names.queue) >= count

        await eventually(lambda: stored(50), 30, "the rows from the first address")
        await node.kill()
        second = await publish_many(amqp, names.exchange, "order.created", 50, id_prefix="other")
        await eventually(lambda: stored(100), 60, "the rows from the second address")
        ready, consumers = await queue_depth(rabbitmq_url, names.queue)
        page = await store.page(names.queue, None, 101)
    assert sorted(message.message_id for message in page.messages) == sorted(first + second)
    assert ready == 0
    assert consumers == 1
