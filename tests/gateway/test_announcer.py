"""The commit feeds behind long polls and streams: one listener or poller per gateway, waking
the waiters of a queue, surviving a store outage, and never keeping a waiter past its time."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.announcer import Announcer
from hareway.store import DeliveryRecord, MemoryStore, open_store
from hareway.store.commits import PgCommitListener, PolledCommits
from tests.consumers.pg_node import PgNode
from tests.support.processes import eventually


def record(queue: str, message_id: str) -> DeliveryRecord:
    return DeliveryRecord(
        queue=queue,
        message_id=message_id,
        exchange="orders",
        routing_key="order.created",
        headers={},
        content_type="application/json",
        body=b"{}",
        attempts=1,
    )


@pytest.mark.timeout(30)
async def test_a_poller_wakes_only_the_waiters_of_the_queue_that_got_rows() -> None:
    store = MemoryStore()
    announcer = Announcer(PolledCommits(store, every_s=0.02))
    announcer.start()
    try:
        async with announcer.watching("a") as a, announcer.watching("b") as b:
            await asyncio.sleep(0.1)  # the poller's first look (it wakes everyone once)
            a.arm()
            b.arm()
            woken_b = asyncio.create_task(b.wait(0.5))
            await store.save([record("a", "m1")])
            assert await a.wait(2) is True
            assert await woken_b is False
        assert announcer.waiters == 0
    finally:
        await announcer.stop()


@pytest.mark.timeout(10)
async def test_closing_answers_every_waiter_at_once() -> None:
    announcer = Announcer(None)
    async with announcer.watching("q") as watch:
        waiting = asyncio.create_task(watch.wait(None))
        await asyncio.sleep(0.05)
        announcer.close()
        assert await asyncio.wait_for(waiting, 1) is False
        assert await watch.wait(None) is False


@pytest.mark.timeout(120)
async def test_the_postgres_listener_comes_back_after_an_outage(pg_node: PgNode) -> None:
    store = await open_store(pg_node.url)
    listener = PgCommitListener(pg_node.url, check_every_s=0.5, backoff_max_s=0.5)
    announcer = Announcer(listener)
    announcer.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        async with announcer.watching("q") as watch:
            watch.arm()
            await store.save([record("q", "before")])
            assert await watch.wait(5) is True

            await pg_node.crash()
            watch.arm()
            began = time.monotonic()
            # Down: a waiter still answers at its deadline.
            assert await watch.wait(1.0) is False
            assert 0.9 <= time.monotonic() - began < 2

            async def lost() -> bool:
                return not listener.connected.is_set()

            await eventually(lost, 10, "the listener to notice the outage")
            await pg_node.resume()

            async def reconnected() -> bool:
                return listener.connected.is_set()

            await eventually(reconnected, 30, "the listener to reconnect")
            # Armed after the reconnect's own wake-up: only the commit's NOTIFY wakes it.
            watch.arm()
            await store.save([record("q", "after")])
            assert await watch.wait(5) is True
    finally:
        await announcer.stop()
        await store.close()
