"""The read API over what consumers stored."""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.settings import GatewaySettings
from hareway.store import DeliveryRecord, open_store


async def store_records(settings: GatewaySettings, *records: DeliveryRecord) -> None:
    store = await open_store(settings.database_url)
    await store.save(list(records))
    await store.close()


def record(queue: str, message_id: str, body: bytes, content_type: str | None) -> DeliveryRecord:
    return DeliveryRecord(
        queue=queue,
        message_id=message_id,
        exchange="orders",
        routing_key="order.created",
        headers={"tenant": "acme"},
        content_type=content_type,
        body=body,
        attempts=2,
    )


async def test_message_lookup_names_each_delivery(
    client: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    stored = record("orders.persist", "m-1", b"{}", "application/json")
    await store_records(gateway_settings, stored)

    response = await client.get("/v1/messages/m-1")

    assert response.status_code == 200, response.text
    found = response.json()
    assert found["message_id"] == "m-1"
    [delivery] = found["deliveries"]
    assert delivery["queue"] == "orders.persist"
    assert delivery["status"] == "persisted"
    assert delivery["attempts"] == 2
    assert delivery["exchange"] == "orders"
    assert delivery["routing_key"] == "order.created"
    assert delivery["persisted_at"].endswith("+00:00")


async def test_unknown_message_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/messages/never-stored")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_queue_messages_page_by_cursor_with_json_and_binary_bodies(
    client: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    await store_records(
        gateway_settings,
        record("q", "j", b'{"order_id": 42}', "application/json"),
        record("q", "b", b"\x00\xffraw", "application/octet-stream"),
        record("q", "c", b'{"x": 1}', "application/cloudevents+json"),
    )

    first = (await client.get("/v1/queues/q/messages", params={"limit": 2})).json()
    rest = (
        await client.get("/v1/queues/q/messages", params={"after": first["next_cursor"]})
    ).json()

    json_message, binary_message = first["messages"]
    assert json_message["body"] == {"order_id": 42}
    assert "body_base64" not in json_message
    assert base64.b64decode(binary_message["body_base64"]) == b"\x00\xffraw"
    assert "body" not in binary_message
    assert set(json_message) >= {
        "message_id",
        "exchange",
        "routing_key",
        "headers",
        "content_type",
        "body",
        "attempts",
        "persisted_at",
        "cursor",
    }
    assert [message["message_id"] for message in rest["messages"]] == ["c"]
    assert rest["messages"][0]["body"] == {"x": 1}
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": "nope"}])
async def test_bad_paging_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str | int]
) -> None:
    response = await client.get("/v1/queues/q/messages", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
