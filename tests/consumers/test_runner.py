"""The consumer process against the real broker: exactly once in the store, ack after commit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import GatewaySettings
from hareway.store import open_store
from tests.conftest import Names
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually, start_consumer

pytestmark = pytest.mark.slow


def consumer_env(rabbitmq_url: str, database_url: str, topology_file: Path) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology_file),
    }


async def stored(database_url: str, queue: str) -> int:
    store = await open_store(database_url)
    try:
        return await store.count(queue)
    finally:
        await store.close()


@pytest.mark.timeout(180)
async def test_a_thousand_posted_messages_become_a_thousand_rows(
    rabbitmq_url: str,
    database_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    env = consumer_env(rabbitmq_url, database_url, topology_file)
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    settings = GatewaySettings(
        rabbitmq_url=rabbitmq_url,
        database_url=database_url,
        topology_file=str(topology_file),
        _env_file=None,
    )
    app = create_app(settings)
    limit = asyncio.Semaphore(64)

    async def post(client: httpx.AsyncClient, index: int) -> int:
        async with limit:
            response = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"n": index}},
            )
            return response.status_code

    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                statuses = await asyncio.gather(*(post(client, index) for index in range(1000)))
        assert statuses == [202] * 1000

        async def all_stored() -> bool:
            return await stored(database_url, names.queue) >= 1000

        await eventually(all_stored, 60, "1,000 rows")
    finally:
        exit_code = await consumer.stop()
    assert exit_code == 0, consumer.output()
    assert await stored(database_url, names.queue) == 1000
    assert await ready_count(amqp, names.queue) == 0  # every delivery was acked


@pytest.mark.timeout(240)
async def test_sigkill_midway_then_restart_stores_every_message_exactly_once(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    env = consumer_env(rabbitmq_url, sqlite_url, topology_file)
    # Declare the topology (the first consumer start does it), then fill the queue.
    first = await start_consumer([names.queue], env, tmp_path / "first.log")
    first.signal(signal.SIGSTOP)  # hold it still while the queue fills
    ids = await publish_many(amqp, names.exchange, "order.created", 5000)
    first.signal(signal.SIGCONT)

    async def some_stored() -> bool:
        return await stored(sqlite_url, names.queue) > 0

    await eventually(some_stored, 60, "the first rows", poll_s=0.01)
    first.signal(signal.SIGKILL)
    await first.wait()
    at_kill = await stored(sqlite_url, names.queue)
    assert at_kill < 5000, "the consumer finished before it was killed; the test proved nothing"

    second = await start_consumer([names.queue], env, tmp_path / "second.log")
    try:

        async def all_stored() -> bool:
            return await stored(sqlite_url, names.queue) >= 5000

        await eventually(all_stored, 120, "5,000 rows")
    finally:
        exit_code = await second.stop()
    assert exit_code == 0, second.output()
    store = await open_store(sqlite_url)
    page = await store.page(names.queue, None, 1000)
    seen: list[str] = []
    while True:
        seen += [message.message_id for message in page.messages]
        if page.next_cursor is None:
            break
        page = await store.page(names.queue, page.next_cursor, 1000)
    await store.close()
    assert sorted(seen) == sorted(ids)  # each once: no loss, no duplicate
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.timeout(180)
async def test_sigterm_under_load_exits_zero_and_loses_nothing(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    env = consumer_env(rabbitmq_url, sqlite_url, topology_file)
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    published: list[str] = []

    async def keep_publishing() -> None:
        for round_ in range(30):
            published.extend(
                await publish_many(
                    amqp, names.exchange, "order.created", 100, id_prefix=f"r{round_}"
                )
            )
            await asyncio.sleep(0.02)

    publishing = asyncio.create_task(keep_publishing())

    async def under_way() -> bool:
        return await stored(sqlite_url, names.queue) > 200

    await eventually(under_way, 60, "the consumer to be under load")
    consumer.signal(signal.SIGTERM)
    exit_code = await consumer.wait(30)
    await publishing

    assert exit_code == 0, consumer.output()
    assert "draining" in consumer.output()
    in_store = await stored(sqlite_url, names.queue)
    in_queue = await ready_count(amqp, names.queue)
    assert in_store < len(published), "the consumer drained everything; no load at SIGTERM"
    assert in_store + in_queue == len(published) == 3000


@pytest.mark.timeout(60)
async def test_consuming_a_missing_queue_fails_with_its_name(
    rabbitmq_url: str, sqlite_url: str, names: Names, tmp_path: Path
) -> None:
    from tests.support.processes import start

    process = await start(
        "consumers",
        ["--queue", f"{names.prefix}.nowhere"],
        {"RABBITMQ_URL": rabbitmq_url, "DATABASE_URL": sqlite_url},
        tmp_path / "consumer.log",
    )
    exit_code = await process.wait(30)
    assert exit_code == 1
    assert f"{names.prefix}.nowhere" in process.output()
