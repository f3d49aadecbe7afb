"""The client against a real gateway and consumer, on the real broker and both stores; and
its retry across a broker restart, which publishes exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import aio_pika
import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.settings import GatewaySettings
from hareway.client import (
    AsyncClient,
    Client,
    Message,
    NotFound,
    RetryPolicy,
    Unroutable,
)
from tests.conftest import Names
from tests.support.processes import Process, eventually, start_consumer, start_gateway
from tests.support.rabbit_node import RabbitNode

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def gateway(
    rabbitmq_url: str, database_url: str, names: Names, tmp_path: Path
) -> AsyncIterator[str]:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(names.topology()))
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology),
    }
    consumer: Process = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    process, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        yield base_url
    finally:
        await process.stop()
        await consumer.stop()


async def test_publish_batch_read_and_look_up(gateway: str, names: Names) -> None:
    async with AsyncClient(gateway) as client:
        # An id with reserved characters: its Location and its lookup still work.
        one = await client.publish(
            names.exchange,
            "order.created",
            {"n": 0},
            headers={"t": "a"},
            message_id=f"{names.prefix}/a#b?c",
        )
        assert one.location == f"/v1/messages/{names.prefix}%2Fa%23b%3Fc"
        assert one.status == "confirmed"
        assert one.location is not None
        batch = await client.publish_batch(
            names.exchange, [Message("order.created", {"n": n}) for n in range(1, 5)]
        )
        assert batch.confirmed
        ids = [one.message_id] + [result.message_id for result in batch.results]
        read: list[int] = []
        cursor = None
        # A long poll a page at a time until all five are stored.
        async for stored in client.read(names.queue, wait=5, limit=2):
            assert stored.message_id == ids[len(read)]
            read.append(stored.body["n"])
            cursor = stored.cursor
            if len(read) == 5:
                break
        assert read == [0, 1, 2, 3, 4]
        where = await client.message(one.message_id)
        assert where["deliveries"][0]["queue"] == names.queue
        async with httpx.AsyncClient(base_url=gateway) as raw:
            located = await raw.get(one.location)
        assert located.status_code == 200, located.text
        assert located.json()["message_id"] == one.message_id
        # Read to the end without waiting: nothing after the last cursor.
        assert [m async for m in client.read(names.queue, after=cursor)] == []
        assert (await client.dead_letters(names.queue)).messages == []


async def test_the_client_streams_what_is_stored_then_what_comes(
    gateway: str, names: Names
) -> None:
    async with AsyncClient(gateway) as client:
        first = await client.publish(names.exchange, "order.created", {"n": 0})
        seen: list[int] = []
        async with asyncio.timeout(30):
            async for stored in client.stream(names.queue):
                seen.append(stored.body["n"])
                if stored.message_id == first.message_id:
                    # Stored before, streamed; now one that comes while the stream is open.
                    await client.publish(names.exchange, "order.created", {"n": 1})
                if len(seen) == 2:
                    break
        assert seen == [0, 1]


def test_the_blocking_client_and_its_typed_errors(gateway: str, names: Names) -> None:
    with Client(gateway) as client:
        assert client.ready()
        published = client.publish(names.exchange, "order.created", {"n": 1})
        assert published.exchange == names.exchange
        again = client.publish(
            names.exchange, "order.created", {"n": 1}, idempotency_key=published.message_id
        )
        assert again.replayed
        with pytest.raises(NotFound) as missing:
            client.publish(f"{names.prefix}.nope", "order.created")
        assert missing.value.type == "/problems/exchange-not-found"
        with pytest.raises(Unroutable):
            client.publish(names.exchange, "nobody.listens")


class Gate(httpx.AsyncBaseTransport):
    """Passes requests to the app, counting its answers; closed, it holds them. A broker
    that boots routes nothing for a moment while its queues recover (a 422 unroutable,
    rightly not retried): the test holds the client's retries until the queue is back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.open.wait()
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def routes_again(node: RabbitNode, names: Names) -> bool:
    """Whether the restarted node routes the exchange's messages to the queue again. A
    queue answers a passive declare before the node has recovered its bindings: a publish
    then is returned unroutable. The probe is purged, so the queue holds only what follows."""
    try:
        connection = await aio_pika.connect(node.url)
    except (ConnectionError, OSError, aio_pika.exceptions.AMQPConnectionError):
        return False
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.exchange)
        await exchange.publish(
            aio_pika.Message(b"probe"), routing_key="order.probe", mandatory=True
        )
        queue = await channel.declare_queue(names.queue, passive=True)
        await queue.purge()
        return True
    except (aio_pika.exceptions.ChannelClosed, aio_pika.exceptions.DeliveryError):
        return False
    finally:
        await connection.close()


@pytest.mark.slow
async def test_a_retry_across_a_broker_restart_publishes_exactly_once(
    rabbit_node: RabbitNode, tmp_path: Path, names: Names
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(names.topology()))
    settings = GatewaySettings(
        rabbitmq_url=rabbit_node.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        topology_file=str(topology),
        _env_file=None,
    )
    app = create_app(settings)
    patient = RetryPolicy(attempts=200, backoff_s=0.1, max_wait_s=0.25)
    async with app.router.lifespan_context(app):
        gate = Gate(httpx.ASGITransport(app=app))
        async with AsyncClient("http://gateway", transport=gate, retry=patient) as client:
            await rabbit_node.kill()
            publishing = asyncio.create_task(
                client.publish(names.exchange, "order.created", {"n": 1})
            )
            await eventually(lambda: _true(len(gate.statuses) >= 3), 20, "503s to retry")
            gate.open.clear()
            assert not publishing.done()
            assert set(gate.statuses) == {503}
            await rabbit_node.start_again()
            await eventually(partial(routes_again, rabbit_node, names), 30, "the binding")
            gate.open.set()
            published = await asyncio.wait_for(publishing, 60)
    assert published.status == "confirmed"
    assert gate.statuses[-1] == 202
    connection = await aio_pika.connect(rabbit_node.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.queue, passive=True)
        assert queue.declaration_result.message_count == 1
    finally:
        await connection.close()


async def _true(value: bool) -> bool:
    return value
