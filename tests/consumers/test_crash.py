"""A consumer process killed while messages are retrying loses none and stores none twice."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractConnection

from hareway.store.schema import messages
from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, store_at, write_topology
from tests.support.broker import publish_many, ready_count
from tests.support.processes import Process, eventually, start

pytestmark = pytest.mark.slow

COUNT = 1500


@pytest.fixture(params=["classic", "quorum"])
async def ladder(
    request: pytest.FixtureRequest, names: Names, amqp: AbstractConnection, tmp_path: Path
) -> AsyncIterator[Path]:
    document = retry_topology(names, request.param)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


async def start_flaky(env: dict[str, str], log: Path) -> Process:
    # No --queue: the consumer takes the queues its --app has handlers for.
    process = await start("consumers", ["--app", "tests.consumers.flaky_app:app"], env, log)
    await process.wait_for_output("consumer ready")
    return process


async def outcomes(database_url: str, queue: str) -> list[tuple[str, str]]:
    async with store_at(database_url) as store, store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(messages.c.message_id, messages.c.status).where(messages.c.queue == queue)
        )
        return [(row.message_id, row.status) for row in rows]


@pytest.mark.timeout(120)
async def test_sigkill_while_retrying_then_restart_settles_every_message_once(
    rabbitmq_url: str,
    sqlite_url: str,
    ladder: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(ladder),
        "HAREWAY_TEST_QUEUE": names.queue,
        "BATCH_SIZE": "100",
    }
    first = await start_flaky(env, tmp_path / "first.log")
    first.signal(signal.SIGSTOP)  # hold it still while the queue fills
    ids = await publish_many(amqp, names.exchange, "order.created", COUNT)
    first.signal(signal.SIGCONT)

    async def retrying() -> bool:
        return "retrying" in first.output() and bool(await outcomes(sqlite_url, names.queue))

    await eventually(retrying, 60, "the first retries", poll_s=0.01)
    first.signal(signal.SIGKILL)
    await first.wait()
    at_kill = len(await outcomes(sqlite_url, names.queue))
    assert at_kill < COUNT, "the consumer finished before it was killed; the test proved nothing"

    second = await start_flaky(env, tmp_path / "second.log")
    try:

        async def settled() -> bool:
            return len(await outcomes(sqlite_url, names.queue)) >= COUNT

        await eventually(settled, 90, f"{COUNT} outcomes")
    finally:
        exit_code = await second.stop()
    assert exit_code == 0, second.output()

    found = await outcomes(sqlite_url, names.queue)
    assert sorted(message_id for message_id, _ in found) == sorted(ids)  # each exactly once
    expected = {
        message_id: "dead_lettered" if index % 3 == 0 else "persisted"
        for index, message_id in enumerate(ids)
    }
    assert dict(found) == expected
    for queue in (names.queue, f"{names.queue}.retry.200ms", f"{names.queue}.retry.400ms"):
        assert await ready_count(amqp, queue) == 0, queue
    # A kill between the dead-letter publish and the ack sends a second copy; never fewer.
    assert await ready_count(amqp, f"{names.queue}.dlq") >= COUNT // 3
