"""The topology model: parsing the file, and declaring it idempotently on the real broker."""

from __future__ import annotations

import aio_pika
import pytest
import yaml
from aio_pika.abc import AbstractConnection

from hareway.topology import (
    Topology,
    TopologyConflict,
    TopologyError,
    declare_topology,
    load_topology,
    parse_topology,
)
from tests.conftest import Names


def test_the_example_file_parses() -> None:
    topology = load_topology("infra/topology.yaml")
    assert [exchange.name for exchange in topology.exchanges] == ["orders"]
    assert topology.queue("orders.persist") is not None


def test_no_file_is_an_empty_topology() -> None:
    assert load_topology(None) == Topology()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("bindings: [{exchange: e, queue: q}]", "undeclared exchange"),
        ("exchanges: [{name: e}]\nbindings: [{exchange: e, queue: q}]", "undeclared queue"),
        ("queues: [{name: q, type: quorum, durable: false}]", "must be durable"),
        ("queues: [{name: q, type: stream}]", "type"),
        ("exchanges: [{name: e, colour: red}]", "colour"),
        ("exchanges: [", "while parsing"),
    ],
)
def test_invalid_files_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TopologyError, match=reason):
        parse_topology(text)


def test_a_missing_file_is_refused_with_its_path() -> None:
    with pytest.raises(TopologyError, match=r"nowhere\.yaml"):
        load_topology("/nonexistent/nowhere.yaml")


async def test_declaring_twice_is_idempotent_and_routes(
    amqp: AbstractConnection, names: Names
) -> None:
    topology = Topology.model_validate(names.topology())
    await declare_topology(amqp, topology)
    await declare_topology(amqp, topology)

    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.exchange)
    await exchange.publish(aio_pika.Message(b"{}"), routing_key="order.created", mandatory=True)
    queue = await channel.get_queue(names.queue)
    message = await queue.get(timeout=5)
    assert message is not None
    await message.ack()
    await channel.close()


async def test_quorum_queues_are_declared_as_quorum(amqp: AbstractConnection, names: Names) -> None:
    topology = Topology.model_validate(names.topology(queue_type="quorum"))
    await declare_topology(amqp, topology)

    # Redeclaring as quorum succeeds only if the broker holds it as a quorum queue.
    channel = await amqp.channel()
    await channel.declare_queue(names.queue, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.close()


async def test_an_entity_with_other_settings_is_a_named_conflict(
    amqp: AbstractConnection, names: Names
) -> None:
    await declare_topology(amqp, Topology.model_validate(names.topology()))
    conflicting = yaml.safe_load(yaml.safe_dump(names.topology(queue_type="quorum")))

    with pytest.raises(TopologyConflict, match=names.queue):
        await declare_topology(amqp, Topology.model_validate(conflicting))
