"""The worker loop itself: a commit that fails for a reason nobody foresaw loses nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractConnection

from consumers.batch import BatchProcessor
from consumers.retry import Republisher
from consumers.settings import ConsumerSettings
from consumers.worker import QueueWorker
from hareway.store import SqlStore, Transaction, open_store
from hareway.topology import Topology, declare_topology
from tests.conftest import Names
from tests.consumers.support import running, settings_for, store_at
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually


class FailsOnce:
    """A store whose first transaction fails with an error that is no known outage."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.failed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("an unforeseen bug")
        return self.store.transaction()


@pytest.fixture
async def sql_store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(sqlite_url)
    yield store
    await store.close()


@pytest.mark.timeout(60)
async def test_an_unforeseen_commit_error_requeues_and_the_loop_goes_on(
    rabbitmq_url: str,
    sql_store: SqlStore,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await declare_topology(amqp, Topology.model_validate(names.topology()))
    settings = ConsumerSettings(
        rabbitmq_url=rabbitmq_url,
        database_url="unused",
        store_backoff_initial_s=0.1,
        _env_file=None,
    )
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=settings.prefetch)
    republisher = await Republisher.open(amqp, names.queue, None)  # type: ignore[arg-type]
    store = FailsOnce(sql_store)
    processor = BatchProcessor(store, names.queue, None, republisher.delay_ms)  # type: ignore[arg-type]
    worker = QueueWorker(channel, names.queue, processor, republisher, settings)
    await publish_many(amqp, names.exchange, "order.created", 50)
    await worker.start()

    async def all_stored() -> bool:
        return await sql_store.count(names.queue) == 50

    await eventually(all_stored, 20, "every message after the failed commit")
    await worker.stop()
    await channel.close()

    assert store.failed
    assert "committing a batch" in caplog.text
    assert "an unforeseen bug" in caplog.text
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("batch_size", "max_wait_ms", "count"),
    [
        (10, 600_000, 30),  # only a full batch can commit: the size trigger
        (1000, 100, 3),  # a batch that never fills commits: the time trigger
    ],
)
async def test_a_batch_commits_when_full_or_when_its_wait_is_over(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    batch_size: int,
    max_wait_ms: int,
    count: int,
) -> None:
    settings = settings_for(
        rabbitmq_url,
        sqlite_url,
        topology_file,
        batch_size=batch_size,
        batch_max_wait_ms=max_wait_ms,
        prefetch=1000,
    )
    async with running(settings, [names.queue]), store_at(sqlite_url) as store:
        await publish_many(amqp, names.exchange, "order.created", count)

        async def all_stored() -> bool:
            return await store.count(names.queue) == count

        await eventually(all_stored, 20, f"{count} rows")
        unacked = await amqp.channel()
        queue = await unacked.declare_queue(names.queue, passive=True)
        await unacked.close()
    assert queue.declaration_result.message_count == 0
