"""Idempotency-Key: a repeat gets the first answer and publishes nothing; another body is 409."""

from __future__ import annotations

import asyncio

import httpx
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.broker import ready_count

ORDER = {"routing_key": "order.created", "payload": {"order_id": 42}}


async def test_same_key_twice_publishes_once_with_the_same_message_id(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    first = await client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-1"})
    again = await client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-1"})

    assert first.status_code == again.status_code == 202, again.text
    assert first.json() == again.json()
    assert again.json()["message_id"] == "pay-1"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert [p.split(";")[0] for p in again.headers["server-timing"].split(", ")] == [
        "validate",
        "replay",
    ]
    assert await ready_count(amqp, names.queue) == 1


async def test_same_key_with_another_body_is_409(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    await client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-2"})
    other = await client.post(
        url, json={**ORDER, "payload": {"order_id": 43}}, headers={"Idempotency-Key": "pay-2"}
    )
    assert other.status_code == 409, other.text
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await ready_count(amqp, names.queue) == 1


async def test_concurrent_requests_with_one_key_publish_once(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    responses = await asyncio.gather(
        *(client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-3"}) for _ in range(10))
    )
    assert {response.status_code for response in responses} == {202}
    assert {response.json()["message_id"] for response in responses} == {"pay-3"}
    assert await ready_count(amqp, names.queue) == 1


async def test_a_failed_request_releases_its_key(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    unroutable = {"routing_key": "invoice.paid", "payload": {}}
    first = await client.post(url, json=unroutable, headers={"Idempotency-Key": "pay-4"})
    assert first.status_code == 422
    # The same key with the corrected body is a new request, not a reuse.
    fixed = await client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-4"})
    assert fixed.status_code == 202, fixed.text
    assert await ready_count(amqp, names.queue) == 1


async def test_a_batch_repeat_publishes_nothing(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/batch"
    batch = {"messages": [ORDER, ORDER, ORDER]}
    first = await client.post(url, json=batch, headers={"Idempotency-Key": "batch-1"})
    again = await client.post(url, json=batch, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 202, again.text
    assert [r["message_id"] for r in again.json()["results"]] == [
        "batch-1:0",
        "batch-1:1",
        "batch-1:2",
    ]
    assert await ready_count(amqp, names.queue) == 3


async def test_keys_are_kept_in_the_store_across_gateway_replicas(
    gateway_settings: object, postgres_url: str, names: Names, amqp: AbstractConnection
) -> None:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    assert isinstance(gateway_settings, GatewaySettings)
    settings = gateway_settings.model_copy(update={"database_url": postgres_url})
    url = f"/v1/exchanges/{names.exchange}/messages"
    answers = []
    for _ in range(2):  # two replicas, one after the other, on one store
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as replica:
                answers.append(
                    await replica.post(
                        url, json=ORDER, headers={"Idempotency-Key": f"{names.prefix}-r"}
                    )
                )
    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert await ready_count(amqp, names.queue) == 1
