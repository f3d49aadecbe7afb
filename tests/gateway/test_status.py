"""`GET /v1/queues` (and `hareway status` on it): the topology's queues with what the real
broker holds of them and the dead letters each store keeps; only the queues a key may read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from gateway.app import create_app
from gateway.settings import ApiKey, GatewaySettings
from hareway.store import open_store
from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, write_topology
from tests.hareway.test_store_contract import dead
from tests.support.processes import start_gateway

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def topology(names: Names, amqp: AbstractConnection) -> AsyncIterator[dict[str, Any]]:
    document = retry_topology(names)
    yield document
    await cleanup(amqp, document)


async def seed_dead_letters(database_url: str, names: Names, count: int) -> None:
    store = await open_store(database_url)
    try:
        await store.save(
            [
                replace(dead(names.queue, f"{names.prefix}-d{n}"), exchange=names.exchange)
                for n in range(count)
            ]
        )
    finally:
        await store.close()


async def test_depth_consumers_and_dead_letters(
    rabbitmq_url: str,
    database_url: str,
    names: Names,
    topology: dict[str, Any],
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    settings = GatewaySettings(
        rabbitmq_url=rabbitmq_url,
        database_url=database_url,
        topology_file=str(write_topology(tmp_path / "topology.yaml", topology)),
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for n in range(3):
                body = {"routing_key": "order.created", "payload": {"n": n}}
                answer = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=body)
                assert answer.status_code == 202, answer.text
            await seed_dead_letters(database_url, names, 2)
            channel = await amqp.channel()
            try:
                queue = await channel.get_queue(names.queue)
                await channel.set_qos(prefetch_count=1)
                taken = asyncio.Event()

                async def hold(message: AbstractIncomingMessage) -> None:
                    taken.set()  # and never settled: the channel closes after

                tag = await queue.consume(hold, no_ack=False)
                await asyncio.wait_for(taken.wait(), 10)
                answer = await client.get("/v1/queues")
                await queue.cancel(tag)
            finally:
                await channel.close()
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert (document["broker"], document["store"]) == ("ready", "ready")
    (listed,) = [entry for entry in document["queues"] if entry["queue"] == names.queue]
    # One of the three is out to the consumer (prefetch 1), unacked: two are ready.
    assert listed == {
        "queue": names.queue,
        "type": "classic",
        "messages": 2,
        "consumers": 1,
        "retrying": 0,
        "dead_letters": 2,
        "dead_letter_queue_messages": 0,
    }


async def test_a_key_sees_only_the_queues_it_may_read(
    rabbitmq_url: str, sqlite_url: str, names: Names, topology: dict[str, Any], tmp_path: Path
) -> None:
    keys = {"mine": f"read:{names.queue}", "other": "read:somebody-else.*"}
    settings = GatewaySettings(
        rabbitmq_url=rabbitmq_url,
        database_url=sqlite_url,
        topology_file=str(write_topology(tmp_path / "topology.yaml", topology)),
        api_keys=tuple(
            ApiKey(name=name, sha256=hashlib.sha256(name.encode()).hexdigest(), scopes=(scope,))
            for name, scope in keys.items()
        ),
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            seen = {}
            for name in keys:
                answer = await client.get("/v1/queues", headers={"X-API-Key": name})
                assert answer.status_code == 200, answer.text
                seen[name] = [entry["queue"] for entry in answer.json()["queues"]]
            assert (await client.get("/v1/queues")).status_code == 401
    assert seen == {"mine": [names.queue], "other": []}


async def test_hareway_status_prints_them(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    topology: dict[str, Any],
    tmp_path: Path,
) -> None:
    await seed_dead_letters(sqlite_url, names, 1)
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(write_topology(tmp_path / "topology.yaml", topology)),
    }
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        outputs = []
        for extra in ([], ["--json"]):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from hareway.cli import app; app()", "status", *extra,
                env={"HAREWAY_URL": base_url, "PATH": "/usr/bin:/bin"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await process.communicate()
            assert process.returncode == 0, err.decode()
            outputs.append(out.decode())
    finally:
        await gateway.stop()
    table, as_json = outputs
    assert table.splitlines()[0] == "gateway ready, broker ready, store ready"
    assert table.splitlines()[1].split() == [
        "queue", "type", "messages", "consumers", "retrying", "dead", "letters"
    ]  # fmt: skip
    assert table.splitlines()[2].split() == [names.queue, "classic", "0", "0", "0", "1"]
    assert json.loads(as_json)["queues"][0]["dead_letters"] == 1
