"""Hostile push targets beside good traffic, on both stores: targets that hang, drop the
connection and answer 500 do not hold another queue's subscription in the same consumer,
and a slow POST does not hold the batches of its own queue behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, running, settings_for, write_topology
from tests.support.broker import publish_many
from tests.support.processes import eventually
from tests.support.receiver import Plan, Received, Receiver, new_secret, serving


def subscribed(names: Names, receiver: Receiver, secret_file: Path, **more: Any) -> Any:
    document = retry_topology(names)  # 200ms, 400ms, 3 attempts
    document["subscriptions"] = [
        {
            "queue": names.queue,
            "url": receiver.url,
            "secret_file": str(secret_file),
            "timeout_s": 1,
            "concurrency": 4,
            **more,
        }
    ]
    return document


def merged(documents: list[Any]) -> Any:
    keys = ("exchanges", "queues", "bindings", "subscriptions")
    return {key: [entry for document in documents for entry in document[key]] for key in keys}


@pytest.fixture
def secret(tmp_path: Path) -> tuple[Path, str]:
    value = new_secret()
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    return path, value


@pytest.fixture
async def documents(amqp: AbstractConnection) -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for document in made:
        await cleanup(amqp, document)


@pytest.mark.timeout(120)
async def test_hanging_dropping_and_failing_targets_leave_good_traffic_flowing(
    rabbitmq_url: str,
    database_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    secret: tuple[Path, str],
    documents: list[Any],
) -> None:
    hostile = {
        "hang": Receiver([secret[1]], plan=Plan(hang=True)),
        "drop": Receiver([secret[1]], plan=Plan(drop=True)),
        "fail": Receiver([secret[1]], plan=Plan(status=500)),
    }
    good = Receiver([secret[1]])
    hostile_names = {kind: Names() for kind in hostile}
    async with (
        serving(hostile["hang"]),
        serving(hostile["drop"]),
        serving(hostile["fail"]),
        serving(good),
    ):
        parts = [subscribed(names, good, secret[0])] + [
            subscribed(hostile_names[kind], receiver, secret[0])
            for kind, receiver in hostile.items()
        ]
        documents.extend(parts)
        topology = write_topology(tmp_path / "topology.yaml", merged(parts))
        queues = [names.queue] + [n.queue for n in hostile_names.values()]
        sent_at: dict[str, float] = {}
        async with running(settings_for(rabbitmq_url, database_url, topology), queues):
            for kind, hostile_queue in hostile_names.items():
                await publish_many(
                    amqp, hostile_queue.exchange, "order.created", 30, id_prefix=kind
                )
            # Good traffic in bursts over a few seconds, while the others time out, are cut
            # off, fail, go down their ladders and trip their breakers.
            for burst in range(12):
                began = time.monotonic()
                ids = await publish_many(
                    amqp, names.exchange, "order.created", 25, id_prefix=f"good-{burst}"
                )
                sent_at |= dict.fromkeys(ids, began)
                await asyncio.sleep(0.25)

            async def all_delivered() -> bool:
                return good.delivered_ids() >= set(sent_at)

            await eventually(all_delivered, 30, "every good message")
            # The hostile ones really were hostile, and called meanwhile.
            assert hostile["hang"].received
            assert hostile["drop"].dropped
            assert hostile["fail"].answered
    # Exactly once: no good message needed a retry, none came twice.
    assert sorted(good.ids()) == sorted(sent_at)
    assert good.unverified == []
    waits = sorted(request.at - sent_at[request.webhook_id] for request in good.received)
    # Generous (a shared machine), but far below what waiting on a hostile target costs:
    # its 1 s timeouts, its ladder, its breaker's probes.
    assert waits[-1] < 3.0, waits[-5:]


@pytest.mark.timeout(90)
async def test_a_slow_post_does_not_hold_the_batches_behind_it(
    rabbitmq_url: str,
    database_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    secret: tuple[Path, str],
    documents: list[Any],
) -> None:
    slow_id = f"{names.prefix}-slow-0"

    def slow_once(request: Received) -> Plan:
        return Plan(delay_s=4.0) if request.webhook_id == slow_id else Plan()

    receiver = Receiver([secret[1]], plan_for=slow_once)
    async with serving(receiver):
        document = subscribed(names, receiver, secret[0], timeout_s=10)
        documents.append(document)
        topology = write_topology(tmp_path / "topology.yaml", document)
        # Small batches: the slow message's batch is one of many.
        settings = settings_for(rabbitmq_url, database_url, topology, batch_size=5)
        async with running(settings, [names.queue]):
            await publish_many(
                amqp, names.exchange, "order.created", 1, id_prefix=f"{names.prefix}-slow"
            )
            began = time.monotonic()
            ids = await publish_many(amqp, names.exchange, "order.created", 60, id_prefix="after")

            async def others_delivered() -> bool:
                return receiver.delivered_ids() >= set(ids)

            await eventually(others_delivered, 20, "the messages behind the slow one")
            others_took = time.monotonic() - began
            slow_answered = slow_id in receiver.delivered_ids()

            async def slow_delivered() -> bool:
                return slow_id in receiver.delivered_ids()

            await eventually(slow_delivered, 20, "the slow one")
    # The batches behind it were POSTed and answered while it was still being answered.
    assert not slow_answered, f"the others took {others_took:.1f} s, longer than the slow one"
    assert sorted(receiver.ids()) == sorted([slow_id, *ids])
    assert receiver.unverified == []
