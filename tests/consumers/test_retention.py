"""Retention seen from the consumer runtime: an expired message redelivered inside its dedupe
window adds no row and runs no handler; and end to end, with a consumer process sweeping
its own store, a gateway answering 410 for what expired and reporting the gap."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message
from consumers.testing import TestConsumer
from hareway.store.janitor import RETENTION, Janitor
from hareway.topology import parse_topology
from tests.conftest import Names
from tests.support.processes import eventually, start_consumer, start_gateway

QUEUE = "orders.persist"


@pytest.mark.timeout(60)
async def test_a_redelivery_of_an_expired_message_runs_no_handler(database_url: str) -> None:
    app, handled = Consumer(), []
    queue = f"{QUEUE}.{uuid.uuid4().hex[:8]}"

    @app.handler(queue)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        handled.append(message.message_id)

    topology = parse_topology(f"queues: [{{name: {queue}, retention: {{max_age: 1d}}}}]")
    message_id = f"m-{uuid.uuid4().hex[:8]}"
    async with TestConsumer(app, topology=topology, database_url=database_url) as consumer:
        first = await consumer.deliver(queue, {"n": 1}, message_id=message_id)
        assert first.status == "persisted", first.last_error
        # Two days on, the janitor sweeps: the body goes, the key stays (14 days).
        later = datetime.now(UTC) + timedelta(days=2)
        sweeper = Janitor(
            consumer.store,
            topology,
            chores=RETENTION,
            every_s=60,
            clock=lambda: later,
            lease=f"lease-{message_id}",
            queues=[queue],
        )
        assert (await sweeper.sweep()).expired == 1
        again = await consumer.deliver(queue, {"n": 1}, message_id=message_id)
        statuses = [d.status for d in await consumer.store.deliveries(message_id)]
        rows = await consumer.store.count(queue)
    assert again.status == "persisted"  # settled as a duplicate: acked, nothing new
    assert handled == [message_id]
    assert statuses == ["expired"]
    assert rows == 1


@pytest.mark.timeout(120)
async def test_a_consumer_sweeps_its_store_and_the_gateway_reports_what_expired(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    tmp_path: Path,
) -> None:
    topology: dict[str, Any] = names.topology()
    topology["queues"][0]["retention"] = {"max_rows": 1}
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(topology))
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
        "RETENTION_SWEEP_S": "0.2",
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    ids = [f"{names.prefix}-{n}" for n in range(3)]
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:

            async def publish(message_id: str) -> None:
                body = {"routing_key": "order.created", "message_id": message_id, "payload": {}}
                answer = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=body)
                assert answer.status_code == 202, answer.text

            async def status(message_id: str) -> int:
                return (await client.get(f"/v1/messages/{message_id}")).status_code

            async def stored(message_id: str) -> bool:
                return await status(message_id) in (200, 410)

            for message_id in ids:
                await publish(message_id)
                await eventually(partial(stored, message_id), 20, message_id)

            async def both_expired() -> bool:
                return [await status(m) for m in ids] == [410, 410, 200]

            await eventually(both_expired, 20, "the two oldest to expire")
            gone = (await client.get(f"/v1/messages/{ids[0]}")).json()
            assert gone["type"] == "/problems/message-expired"
            assert "max_rows 1" in gone["detail"]

            # A late redelivery of an expired message: recognised, its key row untouched.
            # What is published after it is stored after it: then it has been handled.
            key_row = await _row(sqlite_url, ids[0])
            assert key_row[1] == "expired"
            await publish(ids[0])
            await publish(sentinel := f"{names.prefix}-after")
            await eventually(partial(stored, sentinel), 20, "the message after")
            assert await _row(sqlite_url, ids[0]) == key_row
            assert await status(ids[0]) == 410

            # The sentinel pushes the third message out too; only then is the gap still.
            async def third_expired() -> bool:
                return await status(ids[2]) == 410

            await eventually(third_expired, 20, "the third to expire")
            # A reader whose cursor is behind what expired is told so.
            behind = (
                await client.get(f"/v1/queues/{names.queue}/messages", params={"after": "0"})
            ).json()
            assert behind["gap"] is True
            caught_up = (
                await client.get(
                    f"/v1/queues/{names.queue}/messages",
                    params={"after": behind["oldest_cursor"]},
                )
            ).json()
            assert caught_up["gap"] is False
            assert [m["message_id"] for m in caught_up["messages"]][-1:] == [sentinel]
            # A stream from behind says so first, then goes on with what is kept.
            events: list[str] = []
            async with client.stream(
                "GET", f"/v1/queues/{names.queue}/stream", params={"after": "0"}
            ) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith(("event:", "data:")):
                        events.append(line)
                    if sum(line.startswith("event:") for line in events) == 2:
                        break
            assert events[0] == "event: gap"
            assert orjson.loads(events[1][5:]) == {
                "gap": True,
                "oldest_cursor": behind["oldest_cursor"],
            }
            assert events[2] == "event: message"
    finally:
        await gateway.stop()
        await consumer.stop()
    assert "retention sweep" in consumer.output()


async def _row(sqlite_url: str, message_id: str) -> tuple[int, str]:
    path = sqlite_url.split("///", 1)[1]

    def read() -> tuple[int, str]:
        with sqlite3.connect(path) as connection:
            query = "SELECT id, status FROM messages WHERE message_id = ?"
            [row] = connection.execute(query, (message_id,)).fetchall()
        return int(row[0]), str(row[1])

    return await asyncio.to_thread(read)
