"""Dead letters over HTTP: listed without consuming them, redriven with confirms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message
from gateway.settings import GatewaySettings
from hareway.store import DeliveryRecord, open_store
from hareway.store.schema import redrives
from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, running, settings_for, write_topology
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually


@pytest.fixture(params=["classic", "quorum"])
async def topology_file(
    request: pytest.FixtureRequest, names: Names, amqp: AbstractConnection, tmp_path: Path
) -> AsyncIterator[Path]:
    """The gateway and the consumer share one topology: the queue has a retry ladder."""
    document = retry_topology(names, request.param)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


async def dead_letter_ids(client: httpx.AsyncClient, queue: str) -> list[str]:
    response = await client.get(f"/v1/queues/{queue}/dead-letters")
    assert response.status_code == 200, response.text
    return [item["message_id"] for item in response.json()["dead_letters"]]


@pytest.mark.timeout(90)
async def test_dead_lettered_then_listed_then_redriven_to_a_working_handler(
    client: httpx.AsyncClient,
    gateway_settings: GatewaySettings,
    rabbitmq_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
) -> None:
    database_url = gateway_settings.database_url
    working = False
    app = Consumer()

    @app.handler(names.queue)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        if not working:
            raise RuntimeError("the payment service is down")

    settings = settings_for(rabbitmq_url, database_url, topology_file)
    async with running(settings, [names.queue], app):
        ids = await publish_many(amqp, names.exchange, "order.created", 3)

        async def all_dead() -> bool:
            return sorted(await dead_letter_ids(client, names.queue)) == sorted(ids)

        await eventually(all_dead, 30, "three dead letters")
        listed = (await client.get(f"/v1/queues/{names.queue}/dead-letters")).json()
        where = (await client.get(f"/v1/messages/{ids[0]}")).json()

        working = True
        redriven = await client.post(
            f"/v1/queues/{names.queue}/dead-letters/redrive",
            json={"message_ids": [ids[0], ids[1], "never-dead"]},
            headers={"X-Hareway-Actor": "alice"},
        )
        assert redriven.status_code == 200, redriven.text

        async def two_stored() -> bool:
            return len(await dead_letter_ids(client, names.queue)) == 1

        await eventually(two_stored, 30, "two redriven messages to be stored")
        rest = await client.post(f"/v1/queues/{names.queue}/dead-letters/redrive")
        assert rest.status_code == 200, rest.text

        async def none_dead() -> bool:
            return await dead_letter_ids(client, names.queue) == []

        await eventually(none_dead, 30, "the dead-letter list to empty")
        stored = (await client.get(f"/v1/queues/{names.queue}/messages")).json()
        after = (await client.get(f"/v1/messages/{ids[0]}")).json()

    first = listed["dead_letters"][0]
    assert first["attempts"] == 3
    assert first["last_error"] == "RuntimeError: the payment service is down"
    assert first["body"] == {"n": 0}
    assert (first["exchange"], first["routing_key"]) == (names.exchange, "order.created")
    assert where["deliveries"][0]["status"] == "dead_lettered"
    assert where["deliveries"][0]["attempts"] == 3

    result = redriven.json()
    assert result["redriven_by"] == "alice"
    assert [item["message_id"] for item in result["results"]] == ids[:2]
    assert all(item["status"] == "confirmed" for item in result["results"])
    assert result["not_found"] == ["never-dead"]
    assert [item["message_id"] for item in rest.json()["results"]] == [ids[2]]
    assert rest.json()["redriven_by"] == "anonymous"

    assert sorted(message["message_id"] for message in stored["messages"]) == sorted(ids)
    assert all(message["attempts"] == 1 for message in stored["messages"])  # reset
    assert after["deliveries"] == [{**after["deliveries"][0], "status": "persisted", "attempts": 1}]
    assert await ready_count(amqp, names.queue) == 0

    store = await open_store(database_url)
    async with store.engine.connect() as connection:
        log = (await connection.execute(sa.select(redrives).order_by(redrives.c.id))).all()
    await store.close()
    assert [(row.message_id, row.redriven_by) for row in log] == [
        (ids[0], "alice"),
        (ids[1], "alice"),
        (ids[2], "anonymous"),
    ]
    assert all(row.exchange == names.exchange for row in log)


async def test_dead_letters_page_by_cursor_and_refuse_foreign_cursors(
    client: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    store = await open_store(gateway_settings.database_url)
    await store.save(
        [
            DeliveryRecord(
                queue="q",
                message_id=f"d{index}",
                exchange="orders",
                routing_key="order.created",
                headers={},
                content_type="application/json",
                body=b'{"n": 1' if index == 0 else b"{}",
                attempts=1,
                status="dead_lettered",
                last_error="boom",
            )
            for index in range(3)
        ]
    )
    await store.close()

    first = (await client.get("/v1/queues/q/dead-letters", params={"limit": 2})).json()
    rest = (
        await client.get("/v1/queues/q/dead-letters", params={"after": first["next_cursor"]})
    ).json()
    bad = await client.get("/v1/queues/q/dead-letters", params={"after": "nope"})

    assert [item["message_id"] for item in first["dead_letters"]] == ["d0", "d1"]
    assert "body_base64" in first["dead_letters"][0]  # a poison body, as it came
    assert [item["message_id"] for item in rest["dead_letters"]] == ["d2"]
    assert rest["next_cursor"] is None
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def test_a_redrive_body_with_unknown_fields_is_a_422_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/queues/q/dead-letters/redrive", json={"ids": ["a"]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
