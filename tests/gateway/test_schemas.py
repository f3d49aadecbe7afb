"""Per exchange/routing-key JSON Schemas from the topology file: failures are 422 by field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.schemas import InvalidSchema, Schemas
from gateway.settings import GatewaySettings
from hareway.topology import SchemaSpec, parse_topology
from tests.conftest import Names
from tests.support.broker import ready_count

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id"],
    "properties": {"order_id": {"type": "integer"}, "amount": {"type": "number"}},
}


@pytest.fixture
async def checked(
    gateway_settings: GatewaySettings, names: Names, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    topology = names.topology()
    topology["schemas"] = [
        {"exchange": names.exchange, "routing_key": "order.*", "schema": ORDER_SCHEMA}
    ]
    path = tmp_path / "checked.yaml"
    path.write_text(yaml.safe_dump(topology))
    app = create_app(gateway_settings.model_copy(update={"topology_file": str(path)}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_payload_failing_the_schema_is_422_naming_the_field(
    checked: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    url = f"/v1/exchanges/{names.exchange}/messages"
    wrong = await checked.post(
        url, json={"routing_key": "order.created", "payload": {"order_id": "42"}}
    )
    assert wrong.status_code == 422, wrong.text
    problem = wrong.json()
    assert problem["type"].endswith("/schema")
    assert problem["errors"][0]["field"] == "payload.order_id"
    assert "payload.order_id" in problem["detail"]

    good = await checked.post(
        url, json={"routing_key": "order.created", "payload": {"order_id": 42}}
    )
    assert good.status_code == 202, good.text
    # Another routing key has no schema.
    other = await checked.post(url, json={"routing_key": "other.key", "payload": "anything"})
    assert other.status_code == 422  # unroutable, not schema
    assert other.json()["type"].endswith("/unroutable")
    assert await ready_count(amqp, names.queue) == 1


async def test_schema_applies_to_batches_and_cloudevent_data(
    checked: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    batch = await checked.post(
        f"/v1/exchanges/{names.exchange}/batch",
        json={
            "messages": [
                {"routing_key": "order.created", "payload": {"order_id": 1}},
                {"routing_key": "order.created", "payload": {"amount": 1}},
            ]
        },
    )
    assert batch.status_code == 207, batch.text
    assert [r["status"] for r in batch.json()["results"]] == ["confirmed", "invalid"]
    assert batch.json()["results"][1]["error"]["errors"][0]["field"] == "messages.1.payload"

    event = await checked.post(
        f"/v1/exchanges/{names.exchange}/messages",
        content=b'{"order_id": "x"}',
        headers={
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "/s",
            "ce-type": "order.created",
        },
    )
    assert event.status_code == 422, event.text
    assert event.json()["errors"][0]["field"] == "data.order_id"
    assert await ready_count(amqp, names.queue) == 1


def test_topology_schemas_compile_once_and_bad_ones_fail_at_start() -> None:
    topology = parse_topology(
        yaml.safe_dump(
            {
                "exchanges": [{"name": "orders"}],
                "schemas": [
                    {"exchange": "orders", "routing_key": "order.*", "schema": ORDER_SCHEMA}
                ],
            }
        )
    )
    schemas = Schemas(topology.schemas)
    assert schemas.applies("orders", "order.created")
    assert not schemas.applies("orders", "invoice.paid")
    assert not schemas.applies("billing", "order.created")
    with pytest.raises(InvalidSchema):
        Schemas((SchemaSpec(exchange="orders", json_schema={"type": 12}),))
