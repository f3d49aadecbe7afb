"""The HTTP edge's logic on the fakes (MemoryPublisher, MemoryStore): what each request
becomes, what each failure answers. No service: these run in `make unit`. The contract
tests (test_publisher_contract.py, tests/hareway/test_store_contract.py) hold the fakes to
the real publisher and stores; the tests beside this one run the same paths on them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.settings import ApiKey, GatewaySettings
from gateway.testing import MemoryPublisher
from hareway.store import DeliveryRecord, MemoryStore
from hareway.topology import load_topology

EXCHANGE = "orders"
QUEUE = "orders.persist"
ORDER = {"routing_key": "order.created", "payload": {"order_id": 42}}
TOPOLOGY: dict[str, Any] = {
    "exchanges": [{"name": EXCHANGE, "type": "topic"}],
    "queues": [{"name": QUEUE, "retry": {"delays": ["1s"], "max_attempts": 2}}],
    "bindings": [{"exchange": EXCHANGE, "queue": QUEUE, "routing_key": "order.#"}],
    "schemas": [
        {
            "exchange": EXCHANGE,
            "routing_key": "order.created",
            "schema": {"type": "object", "required": ["order_id"]},
        }
    ],
}
KEY = "s3cret"


@dataclass
class Edge:
    client: httpx.AsyncClient
    publisher: MemoryPublisher
    store: MemoryStore

    def published(self) -> list[Any]:
        return self.publisher.messages(QUEUE)


async def _edge(tmp_path: Path, **settings: Any) -> AsyncIterator[Edge]:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(TOPOLOGY))
    publisher = MemoryPublisher(load_topology(path), timeout_s=0.2)
    store = MemoryStore()
    app = create_app(
        GatewaySettings(topology_file=str(path), _env_file=None, **settings),
        publisher=publisher,
        store=store,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Edge(client, publisher, store)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async for made in _edge(tmp_path, retry_after_s=3):
        yield made


@pytest.fixture
async def keyed_edge(tmp_path: Path) -> AsyncIterator[Edge]:
    keys = (
        ApiKey(
            name="orders-service",
            sha256=hashlib.sha256(KEY.encode()).hexdigest(),
            scopes=("publish:orders", "read:orders.*"),
            rate_per_s=1,
            burst=2,
        ),
    )
    async for made in _edge(tmp_path, api_keys=keys):
        yield made


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (f"/problems/{slug}", status)
    return body


async def test_a_message_is_published_as_composed_and_answered_once_confirmed(edge: Edge) -> None:
    response = await edge.client.post(
        f"/v1/exchanges/{EXCHANGE}/messages",
        json={**ORDER, "message_id": "a/b#c", "headers": {"tenant": "acme"}, "priority": 3},
        headers={"X-Request-ID": "r-1"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == "/v1/messages/a%2Fb%23c"
    phases = [phase.split(";")[0] for phase in response.headers["server-timing"].split(", ")]
    assert phases == ["validate", "publish", "confirm"]
    [sent] = edge.published()
    assert (sent.message_id, sent.routing_key, sent.priority) == ("a/b#c", "order.created", 3)
    assert json.loads(sent.body) == {"order_id": 42}
    assert sent.content_type == "application/json"
    # The request id travels with the message (Operations: logs).
    assert sent.headers == {"tenant": "acme", "x-request-id": "r-1"}
    assert sent.app_id == "anonymous"


@pytest.mark.parametrize(
    ("body", "headers", "status", "slug"),
    [
        (b"{not json", {}, 400, "invalid-json"),
        (b"hello", {"content-type": "text/plain"}, 415, "unsupported-media-type"),
        (b'{"routing_key": "order.created", "payload": {}}', {}, 422, "schema"),
        (b'{"routing_key": "order.x", "payload": 1, "priority": 99}', {}, 422, "validation"),
        (
            b'{"routing_key": "order.x", "payload": 1, "headers": {"x-death": 1}}',
            {},
            422,
            "validation",
        ),
        (b'{"routing_key": "order.x", "payload": 1e400}', {}, 422, "validation"),
        (b'{"routing_key": "invoice.paid", "payload": 1}', {}, 422, "unroutable"),
        (b"x" * 2000, {}, 413, "payload-too-large"),
    ],
)
async def test_bad_input_is_a_problem_and_publishes_nothing(
    tmp_path: Path, body: bytes, headers: dict[str, str], status: int, slug: str
) -> None:
    async for edge in _edge(tmp_path, max_message_bytes=1000):
        response = await edge.client.post(
            f"/v1/exchanges/{EXCHANGE}/messages", content=body, headers=headers
        )
        found = problem(response, status, slug)
        assert found["detail"]
        assert found["retryable"] is False
        assert edge.published() == []


async def test_an_unknown_exchange_is_404_and_reserved_ones_403(edge: Edge) -> None:
    problem(
        await edge.client.post("/v1/exchanges/nope/messages", json=ORDER), 404, "exchange-not-found"
    )
    problem(
        await edge.client.post(f"/v1/exchanges/{QUEUE}.retry/messages", json=ORDER),
        403,
        "exchange-forbidden",
    )


@pytest.mark.parametrize(
    ("trouble", "slug"),
    [("down", "broker-unavailable"), ("blocked", "broker-blocked"), ("hold", "publish-timeout")],
)
async def test_broker_trouble_is_503_with_retry_after(edge: Edge, trouble: str, slug: str) -> None:
    setattr(edge.publisher, trouble, True)
    response = await edge.client.post(f"/v1/exchanges/{EXCHANGE}/messages", json=ORDER)
    found = problem(response, 503, slug)
    assert found["retryable"] is True
    assert response.headers["retry-after"] == "3"
    assert "server-timing" in response.headers


async def test_readiness_follows_the_publisher(edge: Edge) -> None:
    assert (await edge.client.get("/readyz")).status_code == 200
    edge.publisher.down = True
    problem(await edge.client.get("/readyz"), 503, "broker-unavailable")


async def test_a_batch_publishes_every_valid_message_and_answers_each(edge: Edge) -> None:
    edge.publisher.nack = lambda message: message.message_id == "n"
    batch = {
        "messages": [
            {**ORDER, "message_id": "ok"},
            {"routing_key": "order.x", "payload": 1, "priority": "high"},
            {"routing_key": "invoice.paid", "payload": 1, "message_id": "lost"},
            {**ORDER, "message_id": "n"},
        ]
    }
    response = await edge.client.post(f"/v1/exchanges/{EXCHANGE}/batch", json=batch)

    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "confirmed"),
        (1, "invalid"),
        (2, "unroutable"),
        (3, "nacked"),
    ]
    assert results[1]["error"]["type"] == "/problems/validation"
    assert results[3]["error"]["retryable"] is True
    assert [message.message_id for message in edge.published()] == ["ok"]


async def test_an_idempotency_key_publishes_once_and_another_body_is_409(edge: Edge) -> None:
    url = f"/v1/exchanges/{EXCHANGE}/messages"
    first = await edge.client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-1"})
    again = await edge.client.post(url, json=ORDER, headers={"Idempotency-Key": "pay-1"})
    other = await edge.client.post(
        url, json={**ORDER, "payload": {"order_id": 43}}, headers={"Idempotency-Key": "pay-1"}
    )

    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() == {**again.json(), "message_id": "pay-1"}
    problem(other, 409, "idempotency-key-reused")
    assert [message.message_id for message in edge.published()] == ["pay-1"]


async def test_a_failed_publish_frees_its_key_for_the_retry(edge: Edge) -> None:
    url = f"/v1/exchanges/{EXCHANGE}/messages"
    edge.publisher.down = True
    problem(
        await edge.client.post(url, json=ORDER, headers={"Idempotency-Key": "k"}),
        503,
        "broker-unavailable",
    )
    edge.publisher.down = False
    retried = await edge.client.post(url, json=ORDER, headers={"Idempotency-Key": "k"})
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers


async def test_concurrent_requests_with_one_key_publish_once(edge: Edge) -> None:
    url = f"/v1/exchanges/{EXCHANGE}/messages"
    responses = await asyncio.gather(
        *(edge.client.post(url, json=ORDER, headers={"Idempotency-Key": "c"}) for _ in range(5))
    )
    assert {response.status_code for response in responses} == {202}
    assert len(edge.published()) == 1


async def test_a_binary_cloudevent_travels_byte_for_byte(edge: Edge) -> None:
    response = await edge.client.post(
        f"/v1/exchanges/{EXCHANGE}/messages",
        content=b"\x00\x01raw",
        headers={
            "content-type": "application/octet-stream",
            "ce-specversion": "1.0",
            "ce-id": "42",
            "ce-source": "/orders",
            "ce-type": "order.shipped",
        },
    )
    assert response.status_code == 202, response.text
    [sent] = edge.published()
    assert (sent.body, sent.routing_key, sent.message_id) == (
        b"\x00\x01raw",
        "order.shipped",
        "/orders#42",
    )
    assert sent.headers["cloudEvents:type"] == "order.shipped"


async def test_keys_scopes_and_rates_are_checked_before_the_body(keyed_edge: Edge) -> None:
    client, url = keyed_edge.client, f"/v1/exchanges/{EXCHANGE}/messages"
    unauthenticated = await client.post(url, json=ORDER)
    problem(unauthenticated, 401, "unauthenticated")
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    auth = {"Authorization": f"Bearer {KEY}"}
    problem(
        await client.post("/v1/exchanges/billing/messages", json=ORDER, headers=auth),
        403,
        "forbidden",
    )
    # A burst of 2 at 1/s: the third is over the rate, whatever its body.
    await client.post(url, json=ORDER, headers=auth)
    limited = await client.post(url, content=b"{not even json", headers=auth)
    problem(limited, 429, "rate-limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert len(keyed_edge.published()) == 1


def stored(message_id: str, **fields: Any) -> DeliveryRecord:
    record = DeliveryRecord(
        queue=QUEUE,
        message_id=message_id,
        exchange=EXCHANGE,
        routing_key="order.created",
        headers={"tenant": "acme"},
        content_type="application/json",
        body=b'{"order_id": 42}',
        attempts=1,
    )
    return dataclasses.replace(record, **fields)


async def test_reads_page_through_what_the_store_holds(edge: Edge) -> None:
    await edge.store.save([stored(f"m{index}") for index in range(3)])
    first = (await edge.client.get(f"/v1/queues/{QUEUE}/messages?limit=2")).json()
    rest = (
        await edge.client.get(f"/v1/queues/{QUEUE}/messages?after={first['next_cursor']}")
    ).json()
    assert [m["message_id"] for m in first["messages"] + rest["messages"]] == ["m0", "m1", "m2"]
    assert first["messages"][0]["body"] == {"order_id": 42}
    assert rest["next_cursor"] is None
    found = (await edge.client.get("/v1/messages/m1")).json()
    assert [d["status"] for d in found["deliveries"]] == ["persisted"]
    problem(await edge.client.get("/v1/messages/never"), 404, "message-not-found")
    problem(await edge.client.get(f"/v1/queues/{QUEUE}/messages?after=x"), 422, "validation")


async def test_a_redrive_republishes_dead_letters_and_logs_who(edge: Edge) -> None:
    await edge.store.save(
        [stored("d1", status="dead_lettered", last_error="boom", attempts=2), stored("ok")]
    )
    listed = (await edge.client.get(f"/v1/queues/{QUEUE}/dead-letters")).json()
    assert [(m["message_id"], m["last_error"]) for m in listed["dead_letters"]] == [("d1", "boom")]

    response = await edge.client.post(
        f"/v1/queues/{QUEUE}/dead-letters/redrive",
        json={"message_ids": ["d1", "zz"]},
        headers={"X-Hareway-Actor": "ops-bob"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["not_found"] == ["zz"]
    [sent] = edge.published()
    assert (sent.message_id, sent.headers) == ("d1", {"tenant": "acme"})
    [log] = await edge.store.redrives(QUEUE)
    assert (log.message_id, log.redriven_by) == ("d1", "ops-bob")


async def test_with_the_store_down_every_store_path_is_503_and_publishing_goes_on(
    edge: Edge,
) -> None:
    await edge.store.save([stored("d1", status="dead_lettered")])
    edge.store.down = True
    for method, url, body, headers in [
        ("GET", "/v1/messages/m1", None, {}),
        ("GET", f"/v1/queues/{QUEUE}/messages", None, {}),
        ("GET", f"/v1/queues/{QUEUE}/dead-letters", None, {}),
        ("POST", f"/v1/queues/{QUEUE}/dead-letters/redrive", {}, {}),
        ("POST", f"/v1/exchanges/{EXCHANGE}/messages", ORDER, {"Idempotency-Key": "k"}),
        (
            "POST",
            f"/v1/exchanges/{EXCHANGE}/batch",
            {"messages": [ORDER]},
            {"Idempotency-Key": "b"},
        ),
    ]:
        response = await edge.client.request(method, url, json=body, headers=headers)
        found = problem(response, 503, "store-unavailable")
        assert found["retryable"] is True, url
        assert response.headers["retry-after"] == "3", url
    assert edge.published() == []
    # Without a key the store has no part in publishing.
    assert (
        await edge.client.post(f"/v1/exchanges/{EXCHANGE}/messages", json=ORDER)
    ).status_code == 202
