"""User handlers: their writes commit with the message row (an inbox), exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, DeadLetter, Message, SyncTransaction
from consumers.errors import HandlerError
from tests.conftest import Names
from tests.consumers.support import (
    cleanup,
    retry_topology,
    running,
    settings_for,
    store_at,
    write_topology,
)
from tests.support.broker import publish_many, ready_count
from tests.support.processes import eventually

effects = sa.Table(
    "effects",
    sa.MetaData(),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
)


@pytest.fixture
async def ladder(names: Names, amqp: AbstractConnection, tmp_path: Path) -> AsyncIterator[Path]:
    document = retry_topology(names)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


async def effect_rows(database_url: str) -> list[tuple[str, int]]:
    async with store_at(database_url) as store, store.engine.connect() as connection:
        rows = (await connection.execute(sa.select(effects).order_by(effects.c.attempt))).all()
    return [(row.message_id, row.attempt) for row in rows]


async def create_effects(database_url: str) -> None:
    async with store_at(database_url) as store, store.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)


@pytest.mark.timeout(60)
async def test_a_failed_attempt_takes_its_writes_back_and_a_redelivery_does_not_rerun(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    await create_effects(sqlite_url)
    app = Consumer()
    calls: list[tuple[str, int]] = []

    @app.handler(names.queue)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        calls.append((message.message_id, message.attempts))
        await tx.execute(
            effects.insert().values(message_id=message.message_id, attempt=message.attempts)
        )
        if message.attempts == 1:
            raise RuntimeError("after writing: this write must not stay")

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        [message_id] = await publish_many(amqp, names.exchange, "order.created", 1)

        async def stored(count: int) -> bool:
            return await store.count(names.queue) == count

        await eventually(lambda: stored(1), 20, "the message to be stored")
        # The same message again (a publisher retry), then another one behind it in the
        # queue: once that one is stored, the repeat has been taken, and ran no handler.
        await publish_many(amqp, names.exchange, "order.created", 1)
        [behind] = await publish_many(amqp, names.exchange, "order.created", 1, id_prefix="b")
        await eventually(lambda: stored(2), 20, "the message behind the repeat")

    assert [attempt for mid, attempt in calls if mid == message_id] == [1, 2]
    assert [attempt for mid, attempt in calls if mid == behind] == [1, 2]
    assert sorted(await effect_rows(sqlite_url)) == sorted([(message_id, 2), (behind, 2)])
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.timeout(60)
async def test_a_sync_handler_runs_in_a_thread_without_blocking_the_loop(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    await create_effects(sqlite_url)
    app = Consumer()
    threads: list[threading.Thread] = []

    @app.handler(names.queue)
    def handle(message: Message, tx: SyncTransaction) -> None:
        threads.append(threading.current_thread())
        time.sleep(0.5)  # the classic mistake, harmless here
        tx.execute(effects.insert().values(message_id=message.message_id, attempt=message.attempts))

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        ticker = asyncio.create_task(tick())
        await publish_many(amqp, names.exchange, "order.created", 2)

        async def stored() -> bool:
            return await store.count(names.queue) == 2

        await eventually(stored, 20, "both messages")
        ticker.cancel()

    assert threads
    assert all(thread is not threading.main_thread() for thread in threads)
    assert ticks > 50  # the loop kept running through about a second of sleeping handlers
    assert len(await effect_rows(sqlite_url)) == 2


@pytest.mark.timeout(60)
async def test_raising_dead_letter_skips_the_ladder(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names, amqp: AbstractConnection
) -> None:
    app = Consumer()

    @app.handler(names.queue)
    async def handle(message: Message, tx: AsyncConnection) -> None:
        raise DeadLetter("order 7 refers to no customer")

    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    async with running(settings, [names.queue], app), store_at(sqlite_url) as store:
        [message_id] = await publish_many(amqp, names.exchange, "order.created", 1)

        async def dead() -> bool:
            return bool(await store.deliveries(message_id))

        await eventually(dead, 20, "the dead letter")
        [dead_letter] = (await store.dead_letters(names.queue, None, 10)).messages

    assert dead_letter.attempts == 1
    assert dead_letter.last_error == "order 7 refers to no customer"


def test_one_handler_per_queue() -> None:
    app = Consumer()

    @app.handler("q")
    async def first(message: Message, tx: AsyncConnection) -> None: ...

    with pytest.raises(HandlerError, match="already has a handler"):

        @app.handler("q")
        async def second(message: Message, tx: AsyncConnection) -> None: ...

    assert list(app.handlers) == ["q"]
