"""Publish channels the broker nacks are replaced, and a run of nacks fails readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.channels import UNHEALTHY_AFTER
from gateway.settings import GatewaySettings
from tests.conftest import Names

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


@pytest.fixture
async def full_queue(names: Names, amqp: AbstractConnection) -> AsyncIterator[str]:
    """A routing key whose queue is full and refuses publishes: the broker nacks them."""
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        f"{names.prefix}.full",
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await queue.bind(exchange, "full.#")
    yield "full.x"
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()


@pytest.fixture
async def gateway(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings.model_copy(update={"publish_channels": 2}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_a_channel_the_broker_nacks_is_replaced_and_readiness_follows(
    gateway: httpx.AsyncClient, names: Names, full_queue: str
) -> None:
    pool = gateway.app.state.publisher._inner._channels  # type: ignore[attr-defined]
    before = [slot.channel for slot in pool._slots]
    url = f"/v1/exchanges/{names.exchange}/messages"
    # The exchange's first publish is tried on a channel of its own (exchanges.py).
    first = await gateway.post(url, json={"routing_key": "order.created", "payload": 1})
    assert first.status_code == 202, first.text
    for _ in range(UNHEALTHY_AFTER):
        nacked = await gateway.post(url, json={"routing_key": full_queue, "payload": 1})
        assert nacked.status_code == 503
        assert nacked.json()["type"] == "/problems/nacked"
    # A run of publishes the broker refused: the gateway says so to a load balancer.
    assert (await gateway.get("/readyz")).status_code == 503

    deadline = time.monotonic() + 10
    while any(slot.channel is old for slot, old in zip(pool._slots, before, strict=True)):
        assert time.monotonic() < deadline, "the nacked channels were never replaced"
        await asyncio.sleep(0.05)
    # The new channels publish, and one confirm makes the gateway ready again.
    confirmed = await gateway.post(url, json={"routing_key": "order.created", "payload": 1})
    assert confirmed.status_code == 202, confirmed.text
    assert (await gateway.get("/readyz")).status_code == 200
