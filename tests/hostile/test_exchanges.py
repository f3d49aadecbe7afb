"""Exchanges a caller names that the broker would answer by closing a channel: missing ones
at any rate, the broker's own, the consumer runtime's own, internal ones. Each is a fast
4xx, and the shared connection and channels never notice."""

from __future__ import annotations

import asyncio
import re
import uuid

import aio_pika
import pytest

from tests.hostile.conftest import Stack, problem

pytestmark = [pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(120)]

ORDER = {"routing_key": "order.bad", "payload": {"n": 1}}


async def test_a_flood_of_publishes_to_missing_exchanges_is_fast_404s(stack: Stack) -> None:
    bad = stack.client("bad")
    run = uuid.uuid4().hex[:6]
    # Distinct names, each looked up once; each asked for twice, the repeats answered by
    # the lookup in flight or the cache of missing names.
    names = [f"{stack.names.prefix}.nope-{run}-{n}" for n in range(600)]
    # Many lookups in flight at once (httpx's own cost grows with its concurrency).
    limit = asyncio.Semaphore(25)
    gateway_ms: list[float] = []

    async def publish(exchange: str) -> int:
        async with limit:
            response = await bad.post(f"/v1/exchanges/{exchange}/messages", json=ORDER)
        if response.status_code == 404:
            assert response.json()["type"] == "/problems/exchange-not-found"
            # The gateway's own time for the answer, whatever the client's queueing.
            timing = response.headers["server-timing"]
            gateway_ms.append(sum(float(ms) for ms in re.findall(r"dur=([0-9.]+)", timing)))
        return response.status_code

    async with stack.unhurt():
        statuses = await asyncio.gather(*(publish(name) for name in names + names))
    assert set(statuses) == {404}, {status: statuses.count(status) for status in set(statuses)}
    assert max(gateway_ms) < 2000, f"the slowest 404 took {max(gateway_ms):.0f} ms"


@pytest.mark.parametrize("key", ["bad", "admin", "wildcard"])
async def test_the_brokers_and_the_runtimes_own_exchanges_are_refused_for_every_key(
    stack: Stack, key: str
) -> None:
    caller = stack.client(key)
    reserved = [
        "amq.rabbitmq.trace",
        "amq.rabbitmq.log",
        f"{stack.names.orders_queue}.retry",  # `publish:<prefix>*` covers this name
        f"{stack.names.foreign_queue}.retry",
    ]
    async with stack.unhurt():
        for exchange in reserved:
            for _ in range(20):
                response = await caller.post(f"/v1/exchanges/{exchange}/messages", json=ORDER)
                problem(response, 403, "/exchange-forbidden")


async def test_the_default_exchange_needs_its_own_scope_and_never_reaches_runtime_queues(
    stack: Stack, marker: str
) -> None:
    url = "/v1/exchanges/amq.default/messages"
    to_queue = {"routing_key": stack.names.orders_queue, "payload": {"n": 1}, "message_id": marker}
    async with stack.unhurt():
        # `publish:*` and `publish:<prefix>*` are globs; the default exchange reaches every
        # queue by name, so only a grant that names it does.
        for key in ("wildcard", "bad"):
            problem(await stack.client(key).post(url, json=to_queue), 403, "/forbidden")
        # With the grant: a queue by name, but not the runtime's delay or dead-letter queues.
        accepted = await stack.client("direct").post(url, json=to_queue)
        assert accepted.status_code == 202, accepted.text
        for queue in (f"{stack.names.orders_queue}.dlq", f"{stack.names.orders_queue}.retry.200ms"):
            refused = await stack.client("direct").post(
                url, json={"routing_key": queue, "payload": {"fake": "dead letter"}}
            )
            assert problem(refused, 422, "/validation")["errors"][0]["field"] == "routing_key"
    await stack.wait_row(stack.names.orders_queue, marker)


async def test_an_internal_exchange_is_refused_by_the_broker_once_and_then_by_the_gateway(
    stack: Stack,
) -> None:
    name = f"{stack.names.prefix}.internal-{uuid.uuid4().hex[:6]}"
    channel = await stack.amqp.channel()
    await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, internal=True)
    try:
        async with stack.unhurt():
            # The first publish goes out alone on a channel of its own: the broker closes
            # that one, and the gateway remembers the answer for the requests after it.
            for _ in range(30):
                response = await stack.client("bad").post(
                    f"/v1/exchanges/{name}/messages", json=ORDER
                )
                problem(response, 403, "/exchange-forbidden")
    finally:
        await channel.exchange_delete(name)
        await channel.close()


async def test_a_glob_scope_covers_names_that_only_start_alike(stack: Stack) -> None:
    # Documented in gateway/auth.py: `publish:<prefix>*` covers `<prefix>-secret` too.
    name = f"{stack.names.prefix}-secret"
    channel = await stack.amqp.channel()
    await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, auto_delete=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(name)
    try:
        async with stack.unhurt():
            covered = await stack.client("bad").post(f"/v1/exchanges/{name}/messages", json=ORDER)
            assert covered.status_code == 202, covered.text
            outside = await stack.client("good").post(f"/v1/exchanges/{name}/messages", json=ORDER)
            problem(outside, 403, "/forbidden")
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(name)
        await channel.close()
