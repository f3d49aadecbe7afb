"""Publishing one message through the gateway to the real broker."""

from __future__ import annotations

import asyncio

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.broker import ready_count

pytestmark = pytest.mark.broker

ORDER = {"routing_key": "order.created", "payload": {"order_id": 42, "amount": 99.5}}


def assert_problem(response: httpx.Response, status: int, type_suffix: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, object] = response.json()
    assert problem["status"] == status
    assert str(problem["type"]).endswith(type_suffix)
    assert problem["title"]
    assert problem["detail"]
    return problem


async def test_confirmed_message_is_in_the_queue_as_sent(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    body = {
        **ORDER,
        "headers": {"tenant": "acme"},
        "message_id": "order-42",
        "correlation_id": "corr-1",
        "priority": 5,
        "expiration_ms": 60000,
    }
    response = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=body)

    assert response.status_code == 202, response.text
    assert response.headers["location"] == "/v1/messages/order-42"
    assert response.json() == {
        "message_id": "order-42",
        "exchange": names.exchange,
        "routing_key": "order.created",
        "status": "confirmed",
    }
    assert "validate;dur=" in response.headers["server-timing"]
    channel = await amqp.channel()
    queue = await channel.get_queue(names.queue)
    message = await queue.get(timeout=5)
    assert message is not None
    await message.ack()
    await channel.close()
    assert orjson.loads(message.body) == ORDER["payload"]
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "order-42"
    assert message.correlation_id == "corr-1"
    assert message.priority == 5
    assert message.expiration == 60.0
    assert message.headers["tenant"] == "acme"
    assert message.routing_key == "order.created"


async def test_message_id_comes_from_the_idempotency_key_else_is_generated(
    client: httpx.AsyncClient, names: Names
) -> None:
    keyed = await client.post(
        f"/v1/exchanges/{names.exchange}/messages", json=ORDER, headers={"Idempotency-Key": "k-1"}
    )
    generated = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)

    assert keyed.json()["message_id"] == "k-1"
    assert len(generated.json()["message_id"]) == 32


async def test_unknown_exchange_is_404_and_the_next_publish_still_succeeds(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    missing = await client.post(f"/v1/exchanges/{names.prefix}.missing/messages", json=ORDER)
    assert_problem(missing, 404, "/exchange-not-found")

    after = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
    assert after.status_code == 202, after.text
    assert await ready_count(amqp, names.queue) == 1


async def test_exchange_deleted_after_use_is_404_and_the_channels_recover(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    # The gateway trusts an exchange it has seen; a publish to it after its deletion makes
    # the broker close the publishing channel, which must not break the next publishes.
    doomed = f"{names.prefix}.doomed"
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(doomed, aio_pika.ExchangeType.FANOUT)
    queue = await channel.declare_queue(f"{names.prefix}.doomed.q", auto_delete=True)
    await queue.bind(exchange)
    first = await client.post(f"/v1/exchanges/{doomed}/messages", json=ORDER)
    assert first.status_code == 202, first.text
    await queue.delete(if_unused=False, if_empty=False)
    await exchange.delete()
    await channel.close()

    for _ in range(8):  # more than the channel pool, so every channel is tried
        gone = await client.post(f"/v1/exchanges/{doomed}/messages", json=ORDER)
        assert_problem(gone, 404, "/exchange-not-found")
    for _ in range(8):
        ok = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
        assert ok.status_code == 202, ok.text
    assert (await client.get("/readyz")).status_code == 200


async def test_unroutable_is_422_and_nothing_is_queued(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json={"routing_key": "invoice.paid", "payload": {}},
    )
    assert_problem(response, 422, "/unroutable")
    assert await ready_count(amqp, names.queue) == 0


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    huge = {"routing_key": "order.created", "payload": "x" * (2 * 1024 * 1024)}
    response = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=huge)
    assert_problem(response, 413, "/payload-too-large")
    assert await ready_count(amqp, names.queue) == 0


async def test_malformed_json_is_400(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=b'{"routing_key": "order.created", "payload": ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "/invalid-json")
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {}}, "routing_key"),
        ({**ORDER, "priority": "high"}, "priority"),
        ({**ORDER, "priority": 10}, "priority"),
        ({**ORDER, "headers": {"x-death": "1"}}, "headers"),
        ({**ORDER, "headers": {"CC": "other.key"}}, "headers"),
        ({**ORDER, "routing_key": "k" * 300}, "routing_key"),
        ({**ORDER, "expiration_ms": -1}, "expiration_ms"),
        ({**ORDER, "unknown": 1}, "unknown"),
    ],
    ids=[
        "no-routing-key",
        "priority-text",
        "priority-10",
        "x-header",
        "cc",
        "long-key",
        "negative-ttl",
        "unknown-field",
    ],
)
async def test_invalid_envelope_is_422_naming_the_field(
    client: httpx.AsyncClient,
    names: Names,
    amqp: AbstractConnection,
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=body)
    problem = assert_problem(response, 422, "/validation")
    assert field in str(problem["detail"])
    assert await ready_count(amqp, names.queue) == 0


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_many_concurrent_publishes_are_all_confirmed(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={**ORDER, "message_id": f"c-{index}"},
            )
            for index in range(300)
        )
    )
    assert [response.status_code for response in responses] == [202] * 300
    assert await ready_count(amqp, names.queue) == 300
