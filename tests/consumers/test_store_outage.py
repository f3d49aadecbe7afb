"""PostgreSQL stopped mid-stream and started again: nothing lost, nothing twice, no hot loop."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.pg_node import PgNode
from tests.consumers.support import store_at
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually, free_port, start_consumer

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
async def own_postgres() -> AsyncIterator[PgNode]:
    node = await PgNode.start()
    yield node
    await node.remove()


async def stored(url: str, queue: str) -> int:
    async with store_at(url) as store:
        return await store.count(queue)


async def readiness(port: int) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code


@pytest.mark.timeout(120)
async def test_postgres_down_mid_stream_then_back_stores_every_message_once(
    rabbitmq_url: str,
    own_postgres: PgNode,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    health_port = free_port()
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": own_postgres.url,
        "TOPOLOGY_FILE": str(topology_file),
        "STORE_BACKOFF_INITIAL_S": "0.2",
        "STORE_BACKOFF_MAX_S": "1.6",
        "HEALTH_PORT": str(health_port),
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    assert await readiness(health_port) == 200
    published = await publish_many(amqp, names.exchange, "order.created", 500, id_prefix="a")

    async def some_stored() -> bool:
        return await stored(own_postgres.url, names.queue) > 0

    await eventually(some_stored, 30, "the first rows")
    await own_postgres.crash()
    published += await publish_many(amqp, names.exchange, "order.created", 500, id_prefix="b")

    async def not_ready() -> bool:
        return await readiness(health_port) == 503

    await eventually(not_ready, 10, "readiness to report the outage")
    await asyncio.sleep(4)  # long enough for the backoff to grow to its cap
    log_during_outage = consumer.output()
    await own_postgres.resume()

    async def all_stored() -> bool:
        try:
            return await stored(own_postgres.url, names.queue) >= len(published)
        except Exception:  # the database is still starting
            return False

    await eventually(all_stored, 60, "every message to be stored")

    async def ready() -> bool:
        return await readiness(health_port) == 200

    await eventually(ready, 10, "readiness to recover")
    consumer.signal(signal.SIGTERM)
    assert await consumer.wait(30) == 0, consumer.output()

    async with store_at(own_postgres.url) as store:
        page = await store.page(names.queue, None, 1000)
        seen = [message.message_id for message in page.messages]
        assert page.next_cursor is None
    assert sorted(seen) == sorted(published)  # each once: nothing lost, nothing twice
    assert await ready_count(amqp, names.queue) == 0

    backoffs = [
        float(seconds)
        for seconds in re.findall(r"after a backoff of ([0-9.]+)s", log_during_outage)
    ]
    # Backing off, not a hot loop: few attempts in about 5 s, each waiting longer.
    assert 3 <= len(backoffs) <= 12, backoffs
    assert backoffs[:4] == [0.2, 0.4, 0.8, 1.6], backoffs
