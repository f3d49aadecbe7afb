"""CloudEvents 1.0 in binary and structured mode, out per the AMQP binding."""

from __future__ import annotations

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from tests.conftest import Names
from tests.support.broker import ready_count

CE_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "evt-1",
    "ce-source": "/shop/orders",
    "ce-type": "order.created",
    "ce-time": "2026-01-02T03:04:05Z",
    "ce-tenant": "acme",
}


async def take_one(amqp: AbstractConnection, queue: str) -> AbstractIncomingMessage:
    channel = await amqp.channel()
    message = await (await channel.get_queue(queue)).get(timeout=5)
    assert message is not None
    await message.ack()
    await channel.close()
    return message


async def test_binary_mode_body_is_byte_for_byte_and_attributes_are_headers(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    body = b"\x00\x01 not json \xff"
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=body,
        headers={**CE_HEADERS, "content-type": "application/octet-stream"},
    )

    assert response.status_code == 202, response.text
    assert response.json()["routing_key"] == "order.created"
    assert response.json()["message_id"] == "/shop/orders#evt-1"
    message = await take_one(amqp, names.queue)
    assert message.body == body
    assert message.content_type == "application/octet-stream"
    assert message.message_id == "/shop/orders#evt-1"
    assert message.type == "order.created"
    assert message.headers["cloudEvents:specversion"] == "1.0"
    assert message.headers["cloudEvents:id"] == "evt-1"
    assert message.headers["cloudEvents:source"] == "/shop/orders"
    assert message.headers["cloudEvents:type"] == "order.created"
    assert message.headers["cloudEvents:time"] == "2026-01-02T03:04:05Z"
    assert message.headers["cloudEvents:tenant"] == "acme"


async def test_binary_mode_routing_key_comes_from_the_query(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        params={"routing_key": "order.paid"},
        content=b'{"a": 1}',
        headers={**CE_HEADERS, "content-type": "application/json"},
    )
    assert response.status_code == 202, response.text
    message = await take_one(amqp, names.queue)
    assert message.routing_key == "order.paid"
    assert message.body == b'{"a": 1}'


async def test_structured_mode_is_published(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    event = {
        "specversion": "1.0",
        "id": "evt-2",
        "source": "/shop/orders",
        "type": "order.created",
        "data": {"order_id": 42},
    }
    raw = orjson.dumps(event)
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=raw,
        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    message = await take_one(amqp, names.queue)
    assert message.body == raw
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == "/shop/orders#evt-2"
    assert message.routing_key == "order.created"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{}", {"content-type": "application/cloudevents+json"}),
        (b"[1]", {"content-type": "application/cloudevents+json"}),
        (b"nope", {"content-type": "application/cloudevents+json"}),
        (b"x", {**CE_HEADERS, "ce-specversion": "0.3"}),
        (b"x", {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s"}),
        (b"x", {**CE_HEADERS, "ce-time": "yesterday"}),
        (b"{", {**CE_HEADERS, "content-type": "application/json"}),
    ],
    ids=["empty", "array", "not-json", "v0.3", "no-type", "bad-time", "bad-json-data"],
)
async def test_invalid_cloudevents_are_400_and_publish_nothing(
    client: httpx.AsyncClient,
    names: Names,
    amqp: AbstractConnection,
    content: bytes,
    headers: dict[str, str],
) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages", content=content, headers=headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("/invalid-cloudevent")
    assert await ready_count(amqp, names.queue) == 0
