"""Retry ladders in the topology file: the entities they expand into, and the broker's view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from hareway.definitions import export_definitions
from hareway.plan import Change, apply_topology, diff_topology
from hareway.topology import RetrySpec, Topology, TopologyConflict, parse_topology
from tests.conftest import Names
from tests.hareway.cleanup import remove_topology

LADDER = {"delays": ["200ms", "0.4s"], "max_attempts": 3}


def with_retry(names: Names, queue_type: str = "classic", **retry: Any) -> Topology:
    document: dict[str, Any] = names.topology(queue_type=queue_type)
    document["queues"][0]["retry"] = retry or LADDER
    return Topology.model_validate(document)


@pytest.fixture
async def ladder_names(names: Names, amqp: AbstractConnection) -> AsyncIterator[Names]:
    yield names
    for queue_type in ("classic", "quorum"):
        await remove_topology(amqp, with_retry(names, queue_type))


def test_a_ladder_expands_into_named_entities() -> None:
    topology = parse_topology(
        """
        exchanges: [{name: orders}]
        queues: [{name: orders.persist, retry: {delays: [1s, 10s, 60s], max_attempts: 5}}]
        bindings: [{exchange: orders, queue: orders.persist, routing_key: "order.#"}]
        """
    ).expanded()

    assert [exchange.name for exchange in topology.exchanges] == ["orders", "orders.persist.retry"]
    assert [queue.name for queue in topology.queues] == [
        "orders.persist",
        "orders.persist.retry.1s",
        "orders.persist.retry.10s",
        "orders.persist.retry.1m",
        "orders.persist.dlq",
    ]
    delay = topology.queues[2].broker_arguments()
    # Back to the failing queue only, through the default exchange.
    assert delay == {
        "x-message-ttl": 10_000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders.persist",
    }
    routes = {(b.exchange, b.routing_key, b.queue) for b in topology.bindings}
    assert ("orders.persist.retry", "10s", "orders.persist.retry.10s") in routes
    assert ("orders.persist.retry", "dlq", "orders.persist.dlq") in routes


def test_quorum_ladders_have_a_delivery_limit_and_lose_nothing_on_the_way_back() -> None:
    topology = parse_topology(
        "queues: [{name: q, type: quorum, retry: {delays: [1s], delivery_limit: 30}}]"
    ).expanded()
    main, delay, dlq = topology.queues
    assert main.broker_arguments()["x-delivery-limit"] == 30
    assert main.broker_arguments()["x-dead-letter-exchange"] == "q.retry"
    assert delay.broker_arguments()["x-queue-type"] == "quorum"
    assert delay.broker_arguments()["x-dead-letter-strategy"] == "at-least-once"
    assert dlq.broker_arguments() == {"x-queue-type": "quorum"}


def test_the_ladder_reuses_its_last_delay_then_gives_up() -> None:
    retry = RetrySpec.model_validate({"delays": ["1s", "10s"], "max_attempts": 4})
    assert [retry.delay_before_next(attempts) for attempts in (1, 2, 3, 4)] == [
        1000,
        10_000,
        10_000,
        None,
    ]


@pytest.mark.parametrize(
    ("retry", "reason"),
    [
        ({"delays": []}, "at least 1"),
        ({"max_attempts": 0}, "greater than or equal"),
        ({"delays": ["soon"]}, "duration"),
    ],
)
def test_bad_ladders_are_refused(retry: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        RetrySpec.model_validate(retry)


def test_export_is_a_definitions_document() -> None:
    topology = parse_topology(
        """
        exchanges: [{name: orders}]
        queues: [{name: orders.persist, type: quorum, retry: {delays: [1s]}}]
        bindings: [{exchange: orders, queue: orders.persist, routing_key: "order.#"}]
        """
    )
    definitions = export_definitions(topology)
    assert {queue["name"] for queue in definitions["queues"]} == {
        "orders.persist",
        "orders.persist.retry.1s",
        "orders.persist.dlq",
    }
    assert definitions["queues"][0]["arguments"]["x-queue-type"] == "quorum"
    assert definitions["bindings"][0] == {
        "source": "orders",
        "vhost": "/",
        "destination": "orders.persist",
        "destination_type": "queue",
        "routing_key": "order.#",
        "arguments": {},
    }


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_diff_then_apply_then_diff_again(
    amqp: AbstractConnection, ladder_names: Names, queue_type: str
) -> None:
    topology = with_retry(ladder_names, queue_type)

    before = await diff_topology(amqp, topology)
    assert before.changes
    assert {entry.change for entry in before.entries} == {Change.CREATED}
    assert len(before.of(Change.CREATED)) == 1 + 1 + 4 + 4  # exchanges, queues, bindings

    await apply_topology(amqp, topology)
    await apply_topology(amqp, topology)  # idempotent

    after = await diff_topology(amqp, topology)
    assert not after.changes
    assert len(after.of(Change.UNCHANGED)) == 6
    assert len(after.of(Change.ASSUMED)) == 4


async def test_diff_names_conflicts_and_apply_then_changes_nothing(
    amqp: AbstractConnection, ladder_names: Names
) -> None:
    await apply_topology(amqp, Topology.model_validate(ladder_names.topology()))
    # Now the same queue as quorum with a ladder: the main queue conflicts, the rest is new.
    wanted = with_retry(ladder_names, "quorum")

    plan = await diff_topology(amqp, wanted)
    [conflict] = plan.of(Change.CONFLICTING)
    assert ladder_names.queue in conflict.what
    assert "x-queue-type" in conflict.reason or "x-dead-letter" in conflict.reason

    with pytest.raises(TopologyConflict, match="nothing applied"):
        await apply_topology(amqp, wanted)

    # Nothing half-applied: the retry exchange and the delay queues were not created.
    again = await diff_topology(amqp, wanted)
    assert len(again.of(Change.CREATED)) == len(plan.of(Change.CREATED))
    channel = await amqp.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await channel.declare_queue(f"{ladder_names.queue}.dlq", passive=True)


async def test_a_quorum_queue_hands_a_message_over_its_delivery_limit_to_the_dlq(
    amqp: AbstractConnection, ladder_names: Names
) -> None:
    topology = with_retry(ladder_names, "quorum", delays=["1s"], max_attempts=3, delivery_limit=1)
    try:
        await _hand_over_to_the_dlq(amqp, ladder_names, topology)
    finally:
        # Its ladder differs from the fixture's: remove its own delay queue too.
        await remove_topology(amqp, topology)


async def _hand_over_to_the_dlq(
    amqp: AbstractConnection, ladder_names: Names, topology: Topology
) -> None:
    await apply_topology(amqp, topology)
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(ladder_names.exchange)
    await exchange.publish(aio_pika.Message(b"{}", message_id="crasher"), routing_key="order.x")
    queue = await channel.get_queue(ladder_names.queue)
    # A consumer that dies on the message before counting the attempt, over and over.
    for _ in range(2):
        message = await queue.get(timeout=5)
        assert message is not None
        await message.nack(requeue=True)
    dlq = await channel.get_queue(f"{ladder_names.queue}.dlq")

    found = None
    for _ in range(50):
        found = await dlq.get(fail=False)
        if found is not None:
            break
        await asyncio.sleep(0.1)
    assert found is not None
    assert found.message_id == "crasher"
    await found.ack()
    await channel.close()
