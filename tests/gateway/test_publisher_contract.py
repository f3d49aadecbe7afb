"""The publisher's contract, one class run against the real publisher on RabbitMQ and
against `gateway.testing.MemoryPublisher`: what the HTTP edge relies on, so tests of the
edge on the fake say something about the real thing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from gateway.errors import (
    BrokerUnavailable,
    ExchangeForbidden,
    ExchangeNotFound,
    Overloaded,
    Unroutable,
    ValidationFailed,
)
from gateway.publisher import AmqpPublisher, Confirmed, Outgoing, Publisher, QueueCounts
from gateway.testing import MemoryPublisher, topic_matches
from hareway import broker
from hareway.topology import Topology, declare_topology
from tests.hareway.cleanup import remove_topology

MAX_IN_FLIGHT = 3


@dataclass(frozen=True)
class Seen:
    """A message as a consumer of its queue would see it."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None
    content_type: str | None
    headers: dict[str, Any]
    persistent: bool
    correlation_id: str | None
    priority: int | None
    app_id: str | None


@dataclass
class World:
    publisher: Publisher
    prefix: str
    read: Callable[[str], Awaitable[list[Seen]]]

    def name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def message(self, exchange: str, routing_key: str, **fields: Any) -> Outgoing:
        defaults: dict[str, Any] = {
            "body": b'{"n": 1}',
            "message_id": uuid.uuid4().hex,
            "content_type": "application/json",
        }
        return Outgoing(exchange=exchange, routing_key=routing_key, **(defaults | fields))


def topology(prefix: str) -> Topology:
    return Topology.model_validate(
        {
            "exchanges": [
                {"name": f"{prefix}.orders", "type": "topic"},
                {"name": f"{prefix}.direct", "type": "direct"},
                {"name": f"{prefix}.fanout", "type": "fanout"},
            ],
            "queues": [
                {"name": f"{prefix}.orders.persist"},
                {"name": f"{prefix}.orders.audit"},
                {"name": f"{prefix}.direct.q"},
            ],
            "bindings": [
                {
                    "exchange": f"{prefix}.orders",
                    "queue": f"{prefix}.orders.persist",
                    "routing_key": "order.#",
                },
                {
                    "exchange": f"{prefix}.orders",
                    "queue": f"{prefix}.orders.audit",
                    "routing_key": "*.created",
                },
                {"exchange": f"{prefix}.direct", "queue": f"{prefix}.direct.q", "routing_key": "k"},
                {"exchange": f"{prefix}.fanout", "queue": f"{prefix}.orders.audit"},
                {"exchange": f"{prefix}.fanout", "queue": f"{prefix}.direct.q"},
            ],
        }
    )


class PublisherContract:
    """Subclasses provide the `world` fixture."""

    async def test_a_routed_message_is_confirmed_with_its_properties(self, world: World) -> None:
        sent = world.message(
            world.name("orders"),
            "order.created",
            headers={"tenant": "acme", "n": 7, "f": 0.1, "nested": {"ok": True}},
            correlation_id="c-1",
            priority=5,
            app_id="orders-service",
            timestamp=datetime(2026, 12, 1, tzinfo=UTC),
        )
        await world.publisher.prepare(sent.exchange)
        confirmed = await world.publisher.publish(sent)

        assert isinstance(confirmed, Confirmed)
        [seen] = await world.read(world.name("orders.persist"))
        assert seen == Seen(
            exchange=world.name("orders"),
            routing_key="order.created",
            body=b'{"n": 1}',
            message_id=sent.message_id,
            content_type="application/json",
            headers={"tenant": "acme", "n": 7, "f": 0.1, "nested": {"ok": True}},
            persistent=True,
            correlation_id="c-1",
            priority=5,
            app_id="orders-service",
        )

    async def test_topic_fanout_and_direct_route_as_rabbitmq_does(self, world: World) -> None:
        orders, direct, fanout = world.name("orders"), world.name("direct"), world.name("fanout")
        for exchange, key in [
            (orders, "order"),  # order.# : # matches no words too
            (orders, "order.eu.created"),  # both: order.# and *.created? no: * is one word
            (orders, "invoice.created"),  # *.created only
            (direct, "k"),
            (fanout, "anything"),
        ]:
            await world.publisher.publish(world.message(exchange, key))

        def keys(seen: list[Seen]) -> list[tuple[str, str]]:
            return [(message.exchange, message.routing_key) for message in seen]

        assert keys(await world.read(world.name("orders.persist"))) == [
            (orders, "order"),
            (orders, "order.eu.created"),
        ]
        assert keys(await world.read(world.name("orders.audit"))) == [
            (orders, "invoice.created"),
            (fanout, "anything"),
        ]
        assert keys(await world.read(world.name("direct.q"))) == [
            (direct, "k"),
            (fanout, "anything"),
        ]

    async def test_the_default_exchange_routes_by_queue_name(self, world: World) -> None:
        queue = world.name("direct.q")
        await world.publisher.prepare("amq.default")
        await world.publisher.publish(world.message("amq.default", queue))
        [seen] = await world.read(queue)
        assert (seen.exchange, seen.routing_key) == ("", queue)

    async def test_an_unroutable_message_is_refused_and_lands_nowhere(self, world: World) -> None:
        with pytest.raises(Unroutable):
            await world.publisher.publish(world.message(world.name("orders"), "invoice.paid"))
        with pytest.raises(Unroutable):
            await world.publisher.publish(world.message("amq.default", world.name("nothing")))
        assert await world.read(world.name("orders.persist")) == []

    async def test_a_queue_exists_or_not_and_a_lookup_breaks_no_publish(self, world: World) -> None:
        assert await world.publisher.queue_exists(world.name("orders.persist"))
        assert not await world.publisher.queue_exists(world.name("orders.nope"))
        assert not await world.publisher.queue_exists("no|such queue")
        # Missing queues closed lookup channels only: publishing goes on as before.
        await world.publisher.publish(world.message(world.name("orders"), "order.created"))
        assert world.publisher.ready
        assert await world.publisher.queue_exists(world.name("orders.audit"))

    async def test_a_queues_counts_are_what_it_holds(self, world: World) -> None:
        for _ in range(2):
            await world.publisher.publish(world.message(world.name("orders"), "order.created"))
        counts = await world.publisher.queue_counts(world.name("orders.persist"))
        assert counts == QueueCounts(messages=2, consumers=0)
        assert await world.publisher.queue_counts(world.name("orders.nope")) is None

    async def test_an_unknown_exchange_is_not_found(self, world: World) -> None:
        missing = world.name("missing")
        with pytest.raises(ExchangeNotFound):
            await world.publisher.prepare(missing)
        with pytest.raises(ExchangeNotFound):
            await world.publisher.publish(world.message(missing, "order.created"))
        # The publisher is none the worse for it.
        await world.publisher.publish(world.message(world.name("orders"), "order.created"))
        assert len(await world.read(world.name("orders.persist"))) == 1

    async def test_the_brokers_own_exchanges_refuse_publishers(self, world: World) -> None:
        with pytest.raises(ExchangeForbidden):
            await world.publisher.publish(world.message("amq.rabbitmq.trace", "publish.x"))
        assert world.publisher.ready

    async def test_a_batch_answers_each_message_in_order(self, world: World) -> None:
        orders = world.name("orders")
        sent = [
            world.message(orders, "order.created"),
            world.message(orders, "invoice.paid"),
            world.message(orders, "order.paid"),
        ]
        results = await world.publisher.publish_batch(sent)

        assert [type(result) for result in results] == [Confirmed, Unroutable, Confirmed]
        seen = await world.read(world.name("orders.persist"))
        assert [message.message_id for message in seen] == [sent[0].message_id, sent[2].message_id]

    async def test_a_value_amqp_cannot_encode_fails_only_its_own_message(
        self, world: World
    ) -> None:
        orders = world.name("orders")
        bad = world.message(orders, "order.created", headers={"h": {1, 2}})
        good = world.message(orders, "order.created")
        results = await world.publisher.publish_batch([bad, good])

        assert isinstance(results[0], ValidationFailed)
        assert isinstance(results[1], Confirmed)
        seen = await world.read(world.name("orders.persist"))
        assert [message.message_id for message in seen] == [good.message_id]

    async def test_more_in_flight_than_allowed_is_overloaded_at_once(self, world: World) -> None:
        orders = world.name("orders")
        with pytest.raises(Overloaded):
            await world.publisher.publish_batch(
                [world.message(orders, "order.created") for _ in range(MAX_IN_FLIGHT + 1)]
            )
        assert await world.read(world.name("orders.persist")) == []
        results = await world.publisher.publish_batch(
            [world.message(orders, "order.created") for _ in range(MAX_IN_FLIGHT)]
        )
        assert all(isinstance(result, Confirmed) for result in results)

    async def test_ready_until_closed_then_unavailable(self, world: World) -> None:
        assert world.publisher.ready
        world.publisher.check_ready()
        await world.publisher.close()
        assert not world.publisher.ready
        with pytest.raises(BrokerUnavailable):
            world.publisher.check_ready()
        with pytest.raises(BrokerUnavailable):
            await world.publisher.publish(world.message(world.name("orders"), "order.created"))


class TestMemoryPublisher(PublisherContract):
    @pytest.fixture
    def world(self) -> World:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        publisher = MemoryPublisher(topology(prefix), max_in_flight=MAX_IN_FLIGHT)
        taken: dict[str, int] = {}

        async def read(queue: str) -> list[Seen]:
            # Like basic.get: what was read is gone.
            routed = publisher.routed(queue)[taken.get(queue, 0) :]
            taken[queue] = taken.get(queue, 0) + len(routed)
            return [
                Seen(
                    exchange=item.exchange,
                    routing_key=item.routing_key,
                    body=item.message.body,
                    message_id=item.message.message_id,
                    content_type=item.message.content_type,
                    headers=dict(item.message.headers),
                    persistent=True,
                    correlation_id=item.message.correlation_id,
                    priority=item.message.priority,
                    app_id=item.message.app_id,
                )
                for item in routed
            ]

        return World(publisher, prefix, read)


class TestAmqpPublisher(PublisherContract):
    @pytest.fixture
    async def world(self, rabbitmq_url: str, amqp: AbstractConnection) -> AsyncIterator[World]:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        declared = topology(prefix)
        connection = await broker.connect(rabbitmq_url, "test-publish")
        lookups = await broker.connect(rabbitmq_url, "test-lookups")
        await declare_topology(connection, declared)
        publisher = await AmqpPublisher.open(
            connection,
            lookups,
            channels=2,
            timeout_s=5,
            exchange_cache_ttl_s=30,
            exchange_missing_ttl_s=2,
            max_in_flight=MAX_IN_FLIGHT,
        )
        channel = await amqp.channel()

        async def read(queue: str) -> list[Seen]:
            found: list[Seen] = []
            declared_queue = await channel.get_queue(queue)
            while (message := await declared_queue.get(fail=False, no_ack=True)) is not None:
                found.append(
                    Seen(
                        exchange=message.exchange or "",
                        routing_key=message.routing_key or "",
                        body=message.body,
                        message_id=message.message_id,
                        content_type=message.content_type,
                        headers=dict(message.headers),
                        persistent=message.delivery_mode == 2,
                        correlation_id=message.correlation_id,
                        priority=message.priority,
                        app_id=message.app_id,
                    )
                )
            return found

        yield World(publisher, prefix, read)
        await publisher.close()
        await channel.close()
        await remove_topology(amqp, declared)


@pytest.mark.parametrize(
    ("binding", "key", "matches"),
    [
        ("order.#", "order", True),
        ("order.#", "order.a.b", True),
        ("order.*", "order", False),
        ("order.*", "order.a", True),
        ("order.*", "order.a.b", False),
        ("#", "", True),
        ("*", "", False),
        ("#.created", "created", True),
        ("#.created", "a.b.created", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_the_memory_topic_match_is_rabbitmqs(binding: str, key: str, matches: bool) -> None:
    assert topic_matches(binding, key) is matches
