"""`POST /v1/exchanges/{exchange}/batch`: per-message results, confirms in flight together."""

from __future__ import annotations

import httpx
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.broker import ready_count


def message(index: int, routing_key: str = "order.created") -> dict[str, object]:
    return {"routing_key": routing_key, "payload": {"n": index}, "message_id": f"b-{index}"}


async def test_batch_of_200_with_one_unroutable_is_207_and_the_rest_is_queued(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    messages = [message(index) for index in range(200)]
    messages[57] = message(57, routing_key="invoice.paid")

    response = await client.post(
        f"/v1/exchanges/{names.exchange}/batch", json={"messages": messages}
    )

    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [result["index"] for result in results] == list(range(200))
    assert results[57]["status"] == "unroutable"
    assert results[57]["message_id"] == "b-57"
    assert results[57]["error"]["type"].endswith("/unroutable")
    assert results[57]["error"]["retryable"] is False
    assert all(r["status"] == "confirmed" for i, r in enumerate(results) if i != 57)
    assert await ready_count(amqp, names.queue) == 199
    assert "confirm;" in response.headers["server-timing"]


async def test_all_good_batch_is_202(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    messages = [message(index) for index in range(50)]
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/batch", json={"messages": messages}
    )
    assert response.status_code == 202, response.text
    assert {result["status"] for result in response.json()["results"]} == {"confirmed"}
    assert await ready_count(amqp, names.queue) == 50


async def test_an_invalid_message_fails_alone(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    messages = [
        message(0),
        {"routing_key": "order.created", "payload": {}, "priority": "high"},
        {"payload": {}},
        message(3),
    ]
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/batch", json={"messages": messages}
    )
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == [
        "confirmed",
        "invalid",
        "invalid",
        "confirmed",
    ]
    assert "messages.1.priority" in results[1]["error"]["detail"]
    assert "messages.2.routing_key" in results[2]["error"]["detail"]
    assert await ready_count(amqp, names.queue) == 2


async def test_batch_over_max_batch_is_refused_whole(
    client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    messages = [message(index) for index in range(1001)]
    response = await client.post(
        f"/v1/exchanges/{names.exchange}/batch", json={"messages": messages}
    )
    assert response.status_code == 422, response.text
    assert "at most 1000" in response.json()["detail"]
    assert await ready_count(amqp, names.queue) == 0


async def test_batch_to_a_missing_exchange_is_404(client: httpx.AsyncClient, names: Names) -> None:
    response = await client.post(
        f"/v1/exchanges/{names.prefix}.missing/batch", json={"messages": [message(0)]}
    )
    assert response.status_code == 404, response.text
