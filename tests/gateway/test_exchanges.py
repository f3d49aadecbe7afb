"""Exchange lookups and first publishes never touch the shared channels: on the real broker."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Names

pytestmark = pytest.mark.timeout(60)

ORDER = {"routing_key": "order.created", "payload": {"n": 1}}


@pytest.fixture
async def gateway(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings.model_copy(update={"exchange_missing_ttl_s": 1.0})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def reconnects(client: httpx.AsyncClient) -> dict[str, str]:
    text = (await client.get("/metrics")).text
    counts = dict(re.findall(r'hareway_broker_reconnects_total\{connection="(\w+)"\} (\S+)', text))
    up = dict(re.findall(r'hareway_broker_connected\{connection="(\w+)"\} (\S+)', text))
    assert up == {"publish": "1.0", "lookups": "1.0"}, text
    return counts


async def test_concurrent_lookups_of_missing_exchanges_never_close_a_connection(
    gateway: httpx.AsyncClient, names: Names
) -> None:
    before = await reconnects(gateway)
    missing = [f"{names.prefix}.missing-{n}" for n in range(300)]

    async def publish(exchange: str) -> int:
        return (await gateway.post(f"/v1/exchanges/{exchange}/messages", json=ORDER)).status_code

    good = asyncio.gather(*(publish(names.exchange) for _ in range(100)))
    statuses = await asyncio.gather(*(publish(name) for name in missing))
    assert set(statuses) == {404}
    assert set(await good) == {202}
    assert await reconnects(gateway) == before == {"publish": "0.0", "lookups": "0.0"}


async def test_a_missing_exchange_is_remembered_briefly(
    gateway: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    name = f"{names.prefix}.late"
    assert (await gateway.post(f"/v1/exchanges/{name}/messages", json=ORDER)).status_code == 404
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, auto_delete=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange)
    try:
        # Created now, but answered from the cache of missing names until it expires.
        assert (await gateway.post(f"/v1/exchanges/{name}/messages", json=ORDER)).status_code == 404
        deadline = time.monotonic() + 5
        while True:
            status = (await gateway.post(f"/v1/exchanges/{name}/messages", json=ORDER)).status_code
            if status == 202:
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(name)
        await channel.close()


async def test_a_first_publish_the_broker_refuses_fails_alone(
    gateway: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    internal = f"{names.prefix}.internal-{uuid.uuid4().hex[:4]}"
    channel = await amqp.channel()
    await channel.declare_exchange(internal, aio_pika.ExchangeType.TOPIC, internal=True)
    try:
        before = await reconnects(gateway)
        good = asyncio.gather(
            *(
                gateway.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
                for _ in range(200)
            )
        )
        refused = await asyncio.gather(
            *(gateway.post(f"/v1/exchanges/{internal}/messages", json=ORDER) for _ in range(20))
        )
        assert {response.status_code for response in refused} == {403}
        assert {r.json()["type"] for r in refused} == {"/problems/exchange-forbidden"}
        assert {response.status_code for response in await good} == {202}
        assert await reconnects(gateway) == before
    finally:
        await channel.exchange_delete(internal)
        await channel.close()
