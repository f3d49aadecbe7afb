"""Publishing one message through the gateway to the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Names
from tests.support.broker import ready_count

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


async def test_every_message_property_reaches_the_broker(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    body = {
        **ORDER,
        "reply_to": "replies",
        "type": "order.created.v1",
        "timestamp": "2026-01-02T03:04:05Z",
    }
    response = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=body)
    assert response.status_code == 202, response.text
    channel = await amqp.channel()
    message = await (await channel.get_queue(names.queue)).get(timeout=5)
    assert message is not None
    await message.ack()
    await channel.close()
    assert message.reply_to == "replies"
    assert message.type == "order.created.v1"
    assert message.timestamp is not None
    assert message.timestamp.year == 2026
    # With no API keys configured the caller is anonymous; with keys, its name.
    assert message.app_id == "anonymous"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"]
)
async def test_unsupported_content_type_is_415(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection, content_type: str
) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=orjson.dumps(ORDER),
        headers={"content-type": content_type},
    )
    assert_problem(response, 415, "/unsupported-media-type")
    batch = await client.post(
        f"/v1/exchanges/{names.exchange}/batch",
        content=orjson.dumps({"messages": [ORDER]}),
        headers={"content-type": content_type},
    )
    assert_problem(batch, 415, "/unsupported-media-type")
    assert await ready_count(amqp, names.queue) == 0


async def test_body_over_the_limit_is_413_while_it_streams_in(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: only counting while reading can stop this body.
        nonlocal sent
        yield b'{"routing_key": "order.created", "payload": "'
        for _ in range(64):
            sent += 64 * 1024
            yield b"x" * (64 * 1024)
        yield b'"}'

    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413, "/payload-too-large")
    assert sent < 64 * 64 * 1024, "the gateway read the whole body before refusing it"
    assert await ready_count(amqp, names.queue) == 0


async def test_headers_over_the_size_cap_are_422(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    headers = {f"h{index}": "v" * 200 for index in range(100)}  # about 21 KiB
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages", json={**ORDER, "headers": headers}
    )
    problem = assert_problem(response, 422, "/validation")
    assert "headers" in str(problem["detail"])
    assert await ready_count(amqp, names.queue) == 0


async def test_overlong_idempotency_key_is_422(client: httpx.AsyncClient, names: Names) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json=ORDER,
        headers={"Idempotency-Key": "k" * 256},
    )
    problem = assert_problem(response, 422, "/validation")
    assert "Idempotency-Key" in str(problem["detail"])


async def test_a_batch_over_the_in_flight_cap_is_503_at_once(
    gateway_settings: GatewaySettings, names: Names, amqp: AbstractConnection
) -> None:
    settings = gateway_settings.model_copy(update={"max_in_flight": 10})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post(
                f"/v1/exchanges/{names.exchange}/batch", json={"messages": [ORDER] * 11}
            )
            assert_problem(response, 503, "/overloaded")
            assert response.headers["retry-after"]
            fits = await client.post(
                f"/v1/exchanges/{names.exchange}/batch", json={"messages": [ORDER] * 10}
            )
            assert fits.status_code == 202, fits.text
    assert await ready_count(amqp, names.queue) == 10


async def test_no_confirm_in_time_is_503_outcome_unknown(
    gateway_settings: GatewaySettings, names: Names
) -> None:
    settings = gateway_settings.model_copy(update={"publish_timeout_s": 1e-6})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
            problem = assert_problem(response, 503, "/publish-timeout")
            assert problem["retryable"] is True
            assert "may or may not" in str(problem["detail"])
            assert response.headers["retry-after"]
            assert (await client.get("/readyz")).status_code == 200


async def test_server_timing_splits_the_phases_of_answers_and_failures(
    client: httpx.AsyncClient, names: Names
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    ok = await client.post(url, json=ORDER)
    phases = [part.split(";")[0] for part in ok.headers["server-timing"].split(", ")]
    assert phases == ["validate", "publish", "confirm"]
    for part in ok.headers["server-timing"].split(", "):
        assert float(part.rsplit("dur=", 1)[1]) >= 0

    unroutable = await client.post(url, json={"routing_key": "invoice.paid", "payload": {}})
    assert unroutable.status_code == 422
    assert [p.split(";")[0] for p in unroutable.headers["server-timing"].split(", ")] == [
        "validate",
        "publish",
    ]
    invalid = await client.post(url, content=b"{", headers={"content-type": "application/json"})
    assert invalid.headers["server-timing"].startswith("validate;dur=")

    batch = await client.post(
        f"/v1/exchanges/{names.exchange}/batch", json={"messages": [ORDER, ORDER]}
    )
    assert [p.split(";")[0] for p in batch.headers["server-timing"].split(", ")] == [
        "validate",
        "publish",
        "confirm",
    ]


async def test_metrics_count_outcomes_and_confirm_latency(
    client: httpx.AsyncClient, names: Names
) -> None:
    await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
    await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json={"routing_key": "invoice.paid", "payload": {}},
    )

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'hareway_published_messages_total{outcome="confirmed"} 1.0' in text
    assert 'hareway_published_messages_total{outcome="unroutable"} 1.0' in text
    assert "hareway_publish_confirm_seconds_count 1.0" in text
