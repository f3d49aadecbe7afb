"""Testing the gateway without a broker: `MemoryPublisher`, a RabbitMQ in memory behind the
`Publisher` protocol, routing as RabbitMQ routes and failing as the real publisher fails
(tests/gateway/test_publisher_contract.py runs one contract class against both).

    publisher = MemoryPublisher(load_topology("topology.yaml"))
    app = create_app(settings, publisher=publisher, store=MemoryStore())
    ...
    assert [m.message_id for m in publisher.messages("orders.persist")] == ["m-1"]

Switches stand in for the broker's troubles: `down` (connection lost), `blocked` (memory or
disk alarm), `nack` (which messages the broker refuses), `hold` (no confirm comes).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pamqp.header import ContentHeader

from gateway.errors import (
    BrokerBlocked,
    BrokerUnavailable,
    ExchangeForbidden,
    ExchangeNotFound,
    GatewayError,
    Nacked,
    Overloaded,
    PublishTimeout,
    Unroutable,
    ValidationFailed,
)
from gateway.publisher import BatchResult, Confirmed, Outgoing, QueueCounts
from hareway import amqp
from hareway.topology import Topology
from hareway.wire import broker_exchange_name

__all__ = ["MemoryPublisher", "Routed"]

# The exchanges every RabbitMQ has; the `amq.rabbitmq.*` ones refuse publishers.
_BUILT_IN = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
_INTERNAL = ("amq.rabbitmq.trace", "amq.rabbitmq.log")


@dataclass(frozen=True, slots=True)
class Routed:
    """A message as a queue holds it: where it came from and what was published."""

    queue: str
    exchange: str
    routing_key: str
    message: Outgoing


@dataclass(slots=True)
class _Binding:
    queue: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


class MemoryPublisher:
    def __init__(
        self,
        topology: Topology | None = None,
        *,
        timeout_s: float = 5.0,
        max_in_flight: int = 10_000,
    ) -> None:
        # The codec the real publisher encodes with: the same values fail here as there.
        amqp.prepare()
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._exchanges: dict[str, str] = dict(_BUILT_IN)
        self._bindings: dict[str, list[_Binding]] = {}
        self._queues: dict[str, list[Routed]] = {}
        self.closed = False
        self.down = False
        self.blocked = False
        self.hold = False
        self.nack: Callable[[Outgoing], bool] | None = None
        if topology is not None:
            self.declare(topology)

    def declare(self, topology: Topology) -> None:
        """Add the topology's exchanges, queues (with their retry ladders) and bindings."""
        expanded = topology.expanded()
        for entity in expanded.exchanges:
            self._exchanges.setdefault(entity.name, entity.type)
        for queue in expanded.queues:
            self._queues.setdefault(queue.name, [])
        for binding in expanded.bindings:
            self._bindings.setdefault(binding.exchange, []).append(
                _Binding(binding.queue, binding.routing_key, dict(binding.arguments))
            )

    def messages(self, queue: str) -> list[Outgoing]:
        """What the queue holds, oldest first (nothing consumes here)."""
        return [routed.message for routed in self._queues.get(queue, [])]

    def routed(self, queue: str) -> list[Routed]:
        return list(self._queues.get(queue, []))

    @property
    def ready(self) -> bool:
        return not (self.closed or self.down or self.blocked)

    def check_ready(self) -> None:
        if self.closed or self.down:
            raise BrokerUnavailable("the broker connection is down; retry later")
        if self.blocked:
            raise BrokerBlocked("the broker blocks publishers (memory or disk alarm); retry later")

    async def prepare(self, exchange: str) -> None:
        self.check_ready()
        self._exchange_type(exchange)

    async def publish(self, message: Outgoing) -> Confirmed:
        (result,) = await self.publish_batch([message])
        if isinstance(result, GatewayError):
            raise result
        return result

    async def queue_exists(self, queue: str) -> bool:
        self.check_ready()
        return queue in self._queues

    async def queue_counts(self, queue: str) -> QueueCounts | None:
        self.check_ready()
        if queue not in self._queues:
            return None
        return QueueCounts(messages=len(self._queues[queue]), consumers=0)

    async def publish_batch(self, messages: list[Outgoing]) -> list[BatchResult]:
        self.check_ready()
        if self._in_flight + len(messages) > self._max_in_flight:
            raise Overloaded(
                f"{self._in_flight} publishes are in flight (limit {self._max_in_flight}); "
                "retry later"
            )
        self._in_flight += len(messages)
        try:
            sent_at = time.perf_counter()
            if self.hold:
                # No confirm comes: the whole call is answered at its deadline.
                await asyncio.sleep(self._timeout_s)
                timeout = PublishTimeout(
                    f"no confirm within {self._timeout_s:g}s; the message may or may not be "
                    "queued, so retry with the same message_id"
                )
                return [timeout for _ in messages]
            return [self._route(message, sent_at) for message in messages]
        finally:
            self._in_flight -= len(messages)

    async def close(self) -> None:
        self.closed = True

    def _exchange_type(self, exchange: str) -> str:
        name = broker_exchange_name(exchange)
        if not name:
            return "default"
        if name in _INTERNAL:
            raise ExchangeForbidden(
                f"the broker refuses publishes to exchange {exchange!r} "
                "(internal, or no write permission)"
            )
        kind = self._exchanges.get(name)
        if kind is None:
            raise ExchangeNotFound(f"no exchange {exchange!r}")
        return kind

    def _route(self, message: Outgoing, sent_at: float) -> BatchResult:
        try:
            kind = self._exchange_type(message.exchange)
        except GatewayError as exc:
            return exc
        try:
            ContentHeader(body_size=len(message.body), properties=message.properties()).marshal()
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            return ValidationFailed(
                f"the message cannot be encoded for AMQP: {exc}",
                errors=[{"field": "", "message": str(exc), "type": "amqp_encoding"}],
            )
        name = broker_exchange_name(message.exchange)
        if kind == "default":
            queues = [message.routing_key] if message.routing_key in self._queues else []
        else:
            queues = list(
                dict.fromkeys(
                    binding.queue
                    for binding in self._bindings.get(name, [])
                    if _matches(kind, binding, message)
                )
            )
        if not queues:
            return Unroutable(
                f"exchange {message.exchange!r} routes {message.routing_key!r} to no queue"
            )
        if self.nack is not None and self.nack(message):
            return Nacked("the broker did not ack the message: <Basic.Nack>")
        for queue in queues:
            self._queues[queue].append(Routed(queue, name, message.routing_key, message))
        return Confirmed(sent_at)


def _matches(kind: str, binding: _Binding, message: Outgoing) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return binding.routing_key == message.routing_key
    if kind == "topic":
        return topic_matches(binding.routing_key, message.routing_key)
    # headers: x-match all (the default) or any, over the binding's other arguments.
    wanted = {k: v for k, v in binding.arguments.items() if not k.startswith("x-")}
    have = message.headers
    hits = [name in have and have[name] == value for name, value in wanted.items()]
    if binding.arguments.get("x-match", "all") in ("any", "any-with-x"):
        return any(hits)
    return all(hits)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """RabbitMQ's topic match: words split by dots, `*` one word, `#` zero or more."""
    return _words_match(_words(binding_key), _words(routing_key))


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ splits "" into no words at all.
    return tuple(key.split(".")) if key else ()


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _words_match(rest, words[1:])
