"""Push subscriptions against real receivers: a uvicorn server in the test that verifies
every signature with the `standardwebhooks` package, the real broker, the real stores."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

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
from tests.support.receiver import Plan, Received, Receiver, new_secret, serving


def push_document(names: Names, receiver: Receiver, secret_file: Path, **more: Any) -> Any:
    document = retry_topology(names)  # 200ms, 400ms, 3 attempts
    document["subscriptions"] = [
        {
            "queue": names.queue,
            "url": receiver.url,
            "secret_file": str(secret_file),
            "timeout_s": 2,
            "concurrency": 8,
            **more,
        }
    ]
    return document


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, list[str]]:
    secrets = [new_secret()]
    path = tmp_path / "secret"
    path.write_text(secrets[0] + "\n")
    return path, secrets


@pytest.fixture
async def receiver(secret_file: tuple[Path, list[str]]) -> AsyncIterator[Receiver]:
    async with serving(Receiver(secret_file[1])) as served:
        yield served


@pytest.fixture
async def cleanup_after(amqp: AbstractConnection, names: Names) -> AsyncIterator[list[Any]]:
    documents: list[Any] = []
    yield documents
    for document in documents:
        await cleanup(amqp, document)


def attempt(request: Received) -> int:
    return int(request.headers["hareway-attempt"])


@pytest.mark.timeout(90)
async def test_a_healthy_receiver_gets_every_message_once_signed_byte_for_byte(
    rabbitmq_url: str,
    database_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    document = push_document(names, receiver, secret_file[0])
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, database_url, topology)
    async with running(settings, [names.queue]), store_at(database_url) as store:
        ids = await publish_many(amqp, names.exchange, "order.created", 300, id_prefix=names.prefix)

        async def all_delivered() -> bool:
            return len(receiver.received) >= len(ids)

        await eventually(all_delivered, 40, "every message pushed")

        # The outcome is kept after the receiver answered (and before the ack), so the
        # receiver can hold a request whose outcome is still on its way to the store.
        async def recorded(message_id: str) -> bool:
            found = await store.deliveries(message_id)
            return bool(found) and found[0].push is not None

        await eventually(lambda: recorded(ids[7]), 10, "the eighth outcome recorded")
        await eventually(lambda: recorded(ids[-1]), 10, "the last outcome recorded")
        # A lookup says delivered.
        [delivery] = await store.deliveries(ids[7])
    assert receiver.unverified == []
    # No retry was needed, so exactly once: each id, one request.
    assert sorted(receiver.ids()) == sorted(ids)
    by_id = {request.webhook_id: request for request in receiver.received}
    request = by_id[ids[7]]
    assert request.body == b'{"n": 7}'
    assert request.headers["content-type"] == "application/json"
    assert request.headers["hareway-queue"] == names.queue
    assert request.headers["hareway-exchange"] == names.exchange
    assert request.headers["hareway-routing-key"] == "order.created"
    assert attempt(request) == 1
    assert delivery.status == "persisted"
    assert delivery.push is not None
    assert (delivery.push.status, delivery.push.attempts, delivery.push.last_status) == (
        "delivered",
        1,
        204,
    )
    assert await ready_count(amqp, names.queue) == 0


@pytest.mark.timeout(60)
async def test_concurrency_one_keeps_the_queue_order(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    # A little slow per request, so that any parallelism would reorder them.
    receiver.plan = Plan(delay_s=0.002)
    document = push_document(names, receiver, secret_file[0], concurrency=1)
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology, batch_size=50)
    async with running(settings, [names.queue]):
        ids = await publish_many(amqp, names.exchange, "order.created", 200, id_prefix=names.prefix)

        async def all_delivered() -> bool:
            return len(receiver.received) >= len(ids)

        await eventually(all_delivered, 40, "every message pushed")
    assert receiver.ids() == ids
    assert receiver.unverified == []


@pytest.mark.timeout(60)
async def test_5xx_goes_down_the_ladder_with_the_same_webhook_id_then_delivers(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    def flaky(request: Received) -> Plan:
        if attempt(request) < 3:
            return Plan(status=503, body=b"busy")
        return Plan(status=200)

    receiver.plan_for = flaky
    document = push_document(names, receiver, secret_file[0])
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology)
    async with running(settings, [names.queue]), store_at(sqlite_url) as store:
        [message_id] = await publish_many(
            amqp, names.exchange, "order.created", 1, id_prefix=names.prefix
        )

        async def delivered() -> bool:
            found = await store.deliveries(message_id)
            return bool(found) and found[0].push is not None and found[0].push.status == "delivered"

        await eventually(delivered, 20, "the third attempt delivered")
        [where] = await store.deliveries(message_id)
    assert [attempt(request) for request in receiver.received] == [1, 2, 3]
    assert receiver.ids() == [message_id] * 3  # same id on every retry: dedupe by it
    first, second, third = (request.at for request in receiver.received)
    # The 200 ms delay queue, then the 400 ms one.
    assert 0.2 <= second - first < 3
    assert 0.4 <= third - second < 3
    assert where.status == "persisted"
    assert where.push is not None
    assert (where.push.attempts, where.push.last_status) == (3, 200)
    assert receiver.unverified == []


@pytest.mark.timeout(60)
async def test_5xx_every_time_is_dead_lettered_after_the_ladder(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    receiver.plan = Plan(status=500, body=b"database on fire")
    document = push_document(names, receiver, secret_file[0])
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology)
    async with running(settings, [names.queue]), store_at(sqlite_url) as store:
        [message_id] = await publish_many(
            amqp, names.exchange, "order.created", 1, id_prefix=names.prefix
        )

        async def dead() -> bool:
            return bool((await store.dead_letters(names.queue, None, 10)).messages)

        await eventually(dead, 20, "the dead letter")
        [dead_letter] = (await store.dead_letters(names.queue, None, 10)).messages
        [where] = await store.deliveries(message_id)
    assert [attempt(request) for request in receiver.received] == [1, 2, 3]
    assert dead_letter.attempts == 3
    assert dead_letter.last_error == "push: HTTP 500 from the target: database on fire"
    assert where.status == "dead_lettered"
    assert where.push is not None
    assert where.push.status == "dead_lettered"
    assert await ready_count(amqp, f"{names.queue}.dlq") == 1


@pytest.mark.timeout(60)
async def test_a_4xx_is_dead_lettered_at_once_with_the_answer(
    rabbitmq_url: str,
    database_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    def picky(request: Received) -> Plan:
        if request.webhook_id.endswith("-1"):
            return Plan(status=422, body=b'{"error": "no such customer"}')
        return Plan(status=202)

    receiver.plan_for = picky
    document = push_document(names, receiver, secret_file[0])
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, database_url, topology)
    async with running(settings, [names.queue]), store_at(database_url) as store:
        ids = await publish_many(amqp, names.exchange, "order.created", 3, id_prefix=names.prefix)

        async def settled() -> bool:
            found = [await store.deliveries(message_id) for message_id in ids]
            return all(where and where[0].push is not None for where in found)

        await eventually(settled, 20, "every outcome recorded")
        [dead_letter] = (await store.dead_letters(names.queue, None, 10)).messages
        [rejected] = await store.deliveries(ids[1])
        [taken] = await store.deliveries(ids[0])
    assert Counter(receiver.ids()) == Counter(ids)  # one request each: no retry for a 422
    assert dead_letter.message_id == ids[1]
    assert dead_letter.attempts == 1
    assert dead_letter.last_error == (
        'push: HTTP 422 from the target: {"error": "no such customer"}'
    )
    assert rejected.status == "dead_lettered"
    assert rejected.push is not None
    assert (rejected.push.status, rejected.push.last_status) == ("dead_lettered", 422)
    assert taken.push is not None
    assert taken.push.status == "delivered"
    assert await ready_count(amqp, f"{names.queue}.dlq") == 1


@pytest.mark.timeout(60)
async def test_retry_after_longer_than_the_ladder_is_honoured(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    def slow_down(request: Received) -> Plan:
        return Plan(status=429, retry_after="1") if attempt(request) == 1 else Plan()

    receiver.plan_for = slow_down
    # The ladder's first delay is 200 ms; the target asks for a second: the 2 s queue.
    document = push_document(names, receiver, secret_file[0])
    document["queues"][0]["retry"] = {"delays": ["200ms", "2s"], "max_attempts": 3}
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology)
    async with running(settings, [names.queue]):
        await publish_many(amqp, names.exchange, "order.created", 1, id_prefix=names.prefix)

        async def twice() -> bool:
            return len(receiver.received) >= 2

        await eventually(twice, 20, "the second attempt")
    first, second = (request.at for request in receiver.received)
    assert 1.0 <= second - first < 5


@pytest.mark.timeout(90)
async def test_a_dead_receiver_trips_the_breaker_and_spends_no_attempts(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    # Nothing listens at first: connections are refused.
    receiver = Receiver(secret_file[1])
    async with serving(receiver):
        url = receiver.url
    port = int(url.split(":")[2].split("/")[0])
    document = push_document(
        names, receiver, secret_file[0], breaker={"failures": 3, "probe_s": 0.3}
    )
    document["subscriptions"][0]["url"] = url
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    settings = settings_for(rabbitmq_url, sqlite_url, topology, batch_size=5)
    async with running(settings, [names.queue]), store_at(sqlite_url) as store:
        ids = await publish_many(amqp, names.exchange, "order.created", 20, id_prefix=names.prefix)
        # Three times the whole ladder (0.2 s + 0.4 s): without the breaker, every message
        # would have been dead-lettered by now.
        await asyncio.sleep(2.0)
        assert (await store.dead_letters(names.queue, None, 100)).messages == []
        async with serving(receiver, port=port):

            async def all_delivered() -> bool:
                return receiver.delivered_ids() >= set(ids)

            await eventually(all_delivered, 30, "every message after the target came back")
            await asyncio.sleep(0.3)
        dead = (await store.dead_letters(names.queue, None, 100)).messages
    assert dead == []
    # Only those that failed before the breaker tripped went down the ladder once.
    attempts = Counter(attempt(request) for request in receiver.received)
    assert max(attempts) <= 2, attempts
    assert receiver.unverified == []


@pytest.mark.timeout(60)
async def test_a_hanging_receiver_does_not_hold_another_subscription(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    other = Names()
    hanging = Receiver(secret_file[1], plan=Plan(hang=True))
    healthy = Receiver(secret_file[1])
    async with serving(hanging), serving(healthy):
        slow_doc = push_document(names, hanging, secret_file[0], timeout_s=5)
        fast_doc = push_document(other, healthy, secret_file[0])
        cleanup_after += [slow_doc, fast_doc]
        document = {
            key: slow_doc[key] + fast_doc[key]
            for key in ("exchanges", "queues", "bindings", "subscriptions")
        }
        topology = write_topology(tmp_path / "topology.yaml", document)
        settings = settings_for(rabbitmq_url, sqlite_url, topology)
        async with running(settings, [names.queue, other.queue]):
            await publish_many(amqp, names.exchange, "order.created", 20, id_prefix="slow")
            began = time.monotonic()
            ids = await publish_many(amqp, other.exchange, "order.created", 50, id_prefix="f")

            async def fast_delivered() -> bool:
                return healthy.delivered_ids() >= set(ids)

            await eventually(fast_delivered, 10, "the other subscription's messages")
            took = time.monotonic() - began
            assert hanging.received, "the hanging target was never called"
    # Well within one request timeout of the hanging target (5 s).
    assert took < 4, took
    assert healthy.unverified == []


@pytest.mark.timeout(60)
async def test_a_dropped_connection_is_retried_and_a_binary_cloudevent_stays_binary(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    receiver: Receiver,
    secret_file: tuple[Path, list[str]],
    cleanup_after: list[Any],
) -> None:
    receiver.plan = Plan(drop=True)  # the connection closes, unanswered
    document = push_document(names, receiver, secret_file[0])
    cleanup_after.append(document)
    topology = write_topology(tmp_path / "topology.yaml", document)
    async with running(settings_for(rabbitmq_url, sqlite_url, topology), [names.queue]):
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.exchange)
        # As the gateway publishes a binary-mode CloudEvent (gateway/cloudevent.py).
        event = aio_pika.Message(
            b"<order id='1'/>",
            content_type="application/xml",
            message_id=f"{names.prefix}-ce",
            headers={
                "cloudEvents:specversion": "1.0",
                "cloudEvents:id": "e-1",
                "cloudEvents:source": "/shop",
                "cloudEvents:type": "order.created",
                "tenant": "acme",
            },
        )
        await exchange.publish(event, routing_key="order.created", mandatory=True)
        await channel.close()

        async def dropped() -> bool:
            return receiver.dropped >= 1

        await eventually(dropped, 10, "the first attempt cut off")
        receiver.plan = Plan()

        async def delivered() -> bool:
            return bool(receiver.delivered_ids())

        await eventually(delivered, 10, "the retry delivered")
    [request] = receiver.received  # the dropped one never reached the app
    assert attempt(request) == 2
    assert request.body == b"<order id='1'/>"
    assert request.headers["content-type"] == "application/xml"
    assert request.headers["ce-specversion"] == "1.0"
    assert request.headers["ce-id"] == "e-1"
    assert request.headers["ce-source"] == "/shop"
    assert request.headers["ce-type"] == "order.created"
    assert json.loads(request.headers["hareway-headers"])["tenant"] == "acme"
    assert receiver.unverified == []
