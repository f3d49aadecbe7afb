"""`GET /asyncapi.json`: the gateway serves the AsyncAPI document of the topology it
loaded and declared on the real broker, the one `hareway topology asyncapi` writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import GatewaySettings
from hareway.asyncapi import asyncapi_document
from hareway.plan import delete_topology
from hareway.topology import Topology
from tests.conftest import Names
from tests.hareway.test_asyncapi import violations


@pytest.fixture
async def topology(amqp: AbstractConnection, names: Names) -> AsyncIterator[dict[str, Any]]:
    spec: dict[str, Any] = names.topology()
    spec["queues"][0]["retry"] = {"delays": ["1s", "5s"], "max_attempts": 3}
    spec["schemas"] = [
        {
            "exchange": names.exchange,
            "routing_key": "order.created",
            "schema": {"type": "object", "required": ["order_id"]},
        }
    ]
    yield spec
    # The retry ladder's exchange and queues, which the `names` fixture does not know.
    await delete_topology(amqp, Topology.model_validate(spec))


@pytest.mark.timeout(60)
async def test_the_gateway_serves_the_document_of_its_topology(
    rabbitmq_url: str, sqlite_url: str, tmp_path: Path, topology: dict[str, Any], names: Names
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    settings = GatewaySettings(
        rabbitmq_url=rabbitmq_url,
        database_url=sqlite_url,
        topology_file=str(path),
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.get("/asyncapi.json")
            # It declared the topology: a publish routes, and the schema is enforced.
            published = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"order_id": 1}},
            )
            refused = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"amount": 1}},
            )
            openapi = (await client.get("/openapi.json")).json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == asyncapi_document(Topology.model_validate(topology), vhost="/")
    assert violations(document) == []
    channels = document["channels"]
    assert f"exchange.{names.exchange}" in channels
    assert channels[f"queue.{names.queue}.dlq"]["x-hareway-role"] == "dead-letter-queue"
    message = document["components"]["messages"][f"{names.exchange}.order.created"]
    assert message["payload"]["schema"] == {"type": "object", "required": ["order_id"]}
    # The schema the document shows is the one publishes are checked against.
    assert published.status_code == 202, published.text
    assert refused.status_code == 422
    assert "200" in openapi["paths"]["/asyncapi.json"]["get"]["responses"]
