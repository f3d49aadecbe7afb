"""Broker faults on a RabbitMQ node of the test's own: killed, restarted, memory alarm."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Names
from tests.support.processes import eventually
from tests.support.rabbit_node import RabbitNode

pytestmark = pytest.mark.slow

EXCHANGE, QUEUE = "faults", "faults.persist"
ORDER = {"routing_key": "order.created", "payload": {"order_id": 1}}


@pytest.fixture
def node(rabbit_node: RabbitNode) -> RabbitNode:
    return rabbit_node


@pytest.fixture
async def faulty_client(node: RabbitNode, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        yaml.safe_dump(
            {
                "exchanges": [{"name": EXCHANGE}],
                "queues": [{"name": QUEUE}],
                "bindings": [{"exchange": EXCHANGE, "queue": QUEUE, "routing_key": "order.#"}],
            }
        )
    )
    settings = GatewaySettings(
        rabbitmq_url=node.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        topology_file=str(topology),
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def publish(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(f"/v1/exchanges/{EXCHANGE}/messages", json=ORDER)


async def accepted(client: httpx.AsyncClient) -> bool:
    return (await publish(client)).status_code == 202


@pytest.mark.timeout(180)
async def test_killed_node_is_503_at_once_and_the_gateway_recovers_by_itself(
    node: RabbitNode, faulty_client: httpx.AsyncClient
) -> None:
    assert (await publish(faulty_client)).status_code == 202

    await node.kill()
    started = time.monotonic()
    down = await publish(faulty_client)
    assert time.monotonic() - started < 6
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"]
    assert down.headers["content-type"] == "application/problem+json"
    assert (await faulty_client.get("/readyz")).status_code == 503

    await node.start_again()
    await eventually(lambda: accepted(faulty_client), 60, "a publish accepted after restart")
    assert (await faulty_client.get("/readyz")).status_code == 200


@pytest.mark.timeout(120)
async def test_memory_alarm_is_503_within_2_s_and_202_once_cleared(
    node: RabbitNode, faulty_client: httpx.AsyncClient
) -> None:
    assert (await publish(faulty_client)).status_code == 202

    await node.ctl("set_vm_memory_high_watermark", "0")
    started = time.monotonic()
    answers: list[int] = []
    while time.monotonic() - started < 2:
        response = await publish(faulty_client)
        answers.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"]
            break
    assert answers[-1] == 503, answers
    assert time.monotonic() - started < 2, answers
    assert (await faulty_client.get("/readyz")).status_code == 503

    await node.ctl("set_vm_memory_high_watermark", "0.4")
    await eventually(lambda: accepted(faulty_client), 10, "a publish accepted after the alarm")


@pytest.mark.timeout(180)
async def test_with_two_addresses_the_gateway_fails_over_when_its_node_dies(
    node: RabbitNode, rabbitmq_url: str, amqp: AbstractConnection, names: Names, tmp_path: Path
) -> None:
    # The second address is the shared broker, standing in for a cluster's other node: it
    # holds the same exchange and queue (under this test's own names, removed after it).
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(names.topology()))
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(names.exchange, "topic", durable=True)
    queue = await channel.declare_queue(names.queue, durable=True)
    await queue.bind(exchange, "order.#")
    settings = GatewaySettings(
        rabbitmq_url=f"{node.url},{rabbitmq_url}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        topology_file=str(topology),
        _env_file=None,
    )
    app = create_app(settings)
    path = f"/v1/exchanges/{names.exchange}/messages"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            assert (await client.post(path, json=ORDER)).status_code == 202
            assert await queue.get(fail=False) is None, "the first address is the own node"

            await node.kill()

            async def accepted_elsewhere() -> bool:
                return (await client.post(path, json=ORDER)).status_code == 202

            await eventually(accepted_elsewhere, 60, "a publish accepted on the other address")
    delivered = await queue.get(timeout=5)
    assert delivered.routing_key == "order.created"
    await channel.close()
