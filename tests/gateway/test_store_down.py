"""The real stores going down under a running gateway: a SQLite file made unusable, a
PostgreSQL of the test's own crashed. Every path that needs the store answers a 503
problem with Retry-After (never a 500, never SQL); publishing without a key goes on; the
store coming back needs no restart. The broker side is the in-memory publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.testing import MemoryPublisher
from hareway.store import DeliveryRecord, open_store
from hareway.topology import load_topology
from tests.consumers.pg_node import PgNode
from tests.support.sqlite import ruin

EXCHANGE, QUEUE = "orders", "orders.persist"
ORDER = {"routing_key": "order.created", "payload": {"order_id": 42}}


@dataclass
class Database:
    url: str
    go_down: Callable[[], Awaitable[None]]
    come_back: Callable[[], Awaitable[None]] | None


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        path = tmp_path / "hareway.db"

        async def ruin_it() -> None:
            ruin(path)

        return Database(f"sqlite+aiosqlite:///{path}", ruin_it, None)
    node: PgNode = request.getfixturevalue("pg_node")
    return Database(node.url, node.crash, node.resume)


@pytest.fixture
async def gateway(database: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    topology = {
        "exchanges": [{"name": EXCHANGE}],
        "queues": [{"name": QUEUE}],
        "bindings": [{"exchange": EXCHANGE, "queue": QUEUE, "routing_key": "order.#"}],
    }
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    settings = GatewaySettings(
        database_url=database.url, topology_file=str(path), retry_after_s=2, _env_file=None
    )
    app = create_app(settings, publisher=MemoryPublisher(load_topology(path)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


STORE_PATHS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", "/v1/messages/m-1", None, {}),
    ("GET", f"/v1/queues/{QUEUE}/messages", None, {}),
    ("GET", f"/v1/queues/{QUEUE}/dead-letters", None, {}),
    ("POST", f"/v1/queues/{QUEUE}/dead-letters/redrive", {"message_ids": ["m-1"]}, {}),
    ("POST", f"/v1/exchanges/{EXCHANGE}/messages", ORDER, {"Idempotency-Key": "k-1"}),
    ("POST", f"/v1/exchanges/{EXCHANGE}/batch", {"messages": [ORDER]}, {"Idempotency-Key": "k-2"}),
]


@pytest.mark.timeout(90)
async def test_every_store_path_is_a_503_problem_while_the_store_is_down(
    gateway: httpx.AsyncClient, database: Database
) -> None:
    store = await open_store(database.url)
    record = DeliveryRecord(QUEUE, "m-1", EXCHANGE, "order.created", {}, None, b"x", 1)
    await store.save([record])
    await store.close()
    for method, url, body, headers in STORE_PATHS:
        response = await gateway.request(method, url, json=body, headers=headers)
        assert response.status_code < 500, (url, response.text)

    await database.go_down()

    for method, url, body, headers in STORE_PATHS:
        response = await gateway.request(method, url, json=body, headers=headers)
        assert response.status_code == 503, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "2"
        problem = response.json()
        assert (problem["type"], problem["retryable"]) == ("/problems/store-unavailable", True)
        for sql in ("SELECT", "INSERT", "DELETE", "[SQL", "parameters"):
            assert sql not in response.text, (url, response.text)
    publish = await gateway.post(f"/v1/exchanges/{EXCHANGE}/messages", json=ORDER)
    assert publish.status_code == 202, "publishing without a key needs no store"

    if database.come_back is not None:
        await database.come_back()
        response = await gateway.get("/v1/messages/m-1")
        assert response.status_code == 200, response.text
