"""PostgreSQL stopped mid-stream and started again: nothing lost, nothing twice, no hot loop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.pg_node import PgNode
from tests.consumers.support import cleanup, retry_topology, store_at, write_topology
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually, free_port, start_consumer

pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres(pg_node: PgNode) -> PgNode:
    return pg_node


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
        float(seconds) for seconds in re.findall(r"trying again in ([0-9.]+)s", log_during_outage)
    ]
    # Backing off, not a hot loop: few attempts in about 5 s, each waiting longer.
    assert 3 <= len(backoffs) <= 12, backoffs
    assert backoffs[:4] == [0.2, 0.4, 0.8, 1.6], backoffs


@pytest.mark.timeout(300)
async def test_a_store_outage_on_a_quorum_queue_spends_no_delivery_attempt(
    rabbitmq_url: str,
    own_postgres: PgNode,
    tmp_path: Path,
    names: Names,
    amqp: AbstractConnection,
) -> None:
    """While the store is down the consumer holds its batch and takes nothing more, so no
    message is redelivered: each is stored without an `x-delivery-count`, the count a
    quorum queue spends toward `x-delivery-limit` on every requeue."""
    outage_s = float(os.environ.get("HAREWAY_TEST_OUTAGE_S", "30"))
    document = retry_topology(names, "quorum")
    topology = write_topology(tmp_path / "topology.yaml", document)
    health_port = free_port()
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": own_postgres.url,
        "TOPOLOGY_FILE": str(topology),
        "STORE_BACKOFF_INITIAL_S": "0.2",
        "STORE_BACKOFF_MAX_S": "2",
        "HEALTH_PORT": str(health_port),
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    try:
        published = await publish_many(amqp, names.exchange, "order.created", 300, id_prefix="a")

        async def all_first_stored() -> bool:
            return await stored(own_postgres.url, names.queue) == len(published)

        await eventually(all_first_stored, 30, "the first messages")
        await own_postgres.crash()
        published += await publish_many(amqp, names.exchange, "order.created", 600, id_prefix="b")

        async def not_ready() -> bool:
            return await readiness(health_port) == 503

        await eventually(not_ready, 15, "readiness to report the outage")
        # Held, not requeued: the queue still holds what the consumer has not taken.
        await asyncio.sleep(outage_s)
        assert await ready_count(amqp, names.queue) > 0
        await own_postgres.resume()

        async def all_stored() -> bool:
            try:
                return await stored(own_postgres.url, names.queue) == len(published)
            except Exception:  # the database is still starting
                return False

        await eventually(all_stored, 60, "every message to be stored")
        consumer.signal(signal.SIGTERM)
        assert await consumer.wait(30) == 0, consumer.output()
    finally:
        await consumer.stop()
        await cleanup(amqp, document)
    async with store_at(own_postgres.url) as store:
        page = await store.page(names.queue, None, 1000)
    assert sorted(message.message_id for message in page.messages) == sorted(published)
    redelivered = [m.message_id for m in page.messages if m.headers.get("x-delivery-count")]
    assert not redelivered, f"{len(redelivered)} messages were delivered again: {redelivered[:5]}"
