"""The topology model: exchanges, queues, bindings and retry ladders declared from one YAML file.

Both processes declare it at start. Declaring is idempotent: an entity that already exists
with the same settings is left alone; one with other settings is a `TopologyConflict`,
reported with the name and the broker's reason instead of a bare channel error.

A queue's `retry` ladder expands into entities of its own (see `Topology.expanded`), so
declaring, diffing and exporting all work on one flat list.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal

import aiormq
import yaml
from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hareway.durations import LongMilliseconds, Milliseconds, label
from hareway.errors import HarewayError
from hareway.subscriptions import SubscriptionSpec


class TopologyError(HarewayError):
    """The topology file cannot be read or does not describe a valid topology."""


class TopologyConflict(HarewayError):
    """An entity exists on the broker with settings other than the file's."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeSpec(_Spec):
    name: str = Field(min_length=1, max_length=255)
    type: Literal["direct", "topic", "fanout", "headers"] = "topic"
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)


# The routing key under which a queue's retry exchange reaches its dead-letter queue.
DEAD_LETTER_KEY = "dlq"


class RetrySpec(_Spec):
    """Wait `delays[i]` before attempt i + 2; after `max_attempts` failures, dead-letter.

    More attempts than delays reuse the last delay.
    """

    delays: tuple[Milliseconds, ...] = Field(default=(1000, 10_000, 60_000), min_length=1)
    max_attempts: int = Field(default=5, ge=1)
    # Quorum queues only: the broker dead-letters a message redelivered this often, a
    # safety net for a consumer that crashes on it before it can count the attempt. Store
    # outages requeue too, so it sits well above `max_attempts`.
    delivery_limit: int = Field(default=100, ge=1)

    def delay_before_next(self, attempts: int) -> int | None:
        """Milliseconds to wait after `attempts` failed ones, or None: dead-letter it now."""
        if attempts >= self.max_attempts:
            return None
        return self.delays[min(attempts, len(self.delays)) - 1]


_DAY_MS = 86_400_000


class RetentionSpec(_Spec):
    """How long the store keeps a queue's messages: each is kept *at least* this long.

    Expiry goes in two stages. A persisted message older than `max_age` (or beyond the
    newest `max_rows`) loses its body and headers; a small key row stays until
    `dedupe_window` after it was stored, so a late redelivery is still recognised as a
    duplicate and no handler runs twice. Dead letters are open work, not history: kept
    until redriven or deleted unless `dead_letters_max_age` says otherwise.

    In the file's top-level `retention` every field left out takes the default below; in
    a queue's own `retention` it takes the top-level value.
    """

    max_age: LongMilliseconds | None = 7 * _DAY_MS
    max_rows: int | None = Field(default=None, ge=1)
    dedupe_window: LongMilliseconds = 14 * _DAY_MS
    dead_letters_max_age: LongMilliseconds | None = None

    def under(self, defaults: RetentionSpec) -> RetentionSpec:
        """This queue's policy: its own fields, the file's defaults for the others."""
        return defaults.model_copy(
            update={name: getattr(self, name) for name in self.model_fields_set}
        )

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in self.model_dump(mode="json").items()]
        return ", ".join(parts)


class QueueSpec(_Spec):
    name: str = Field(min_length=1, max_length=255)
    type: Literal["classic", "quorum"] = "classic"
    durable: bool = True
    arguments: dict[str, Any] = Field(default_factory=dict)
    retry: RetrySpec | None = None
    retention: RetentionSpec | None = None

    @model_validator(mode="after")
    def _quorum_is_durable(self) -> QueueSpec:
        if self.type == "quorum" and not self.durable:
            raise ValueError(f"quorum queue {self.name!r} must be durable")
        return self

    def broker_arguments(self) -> dict[str, Any]:
        arguments = dict(self.arguments)
        if self.type == "quorum":
            arguments["x-queue-type"] = "quorum"
        if self.retry is not None:
            # What the broker itself gives up on (rejected, over the delivery limit) lands
            # in the dead-letter queue too, never silently dropped.
            arguments["x-dead-letter-exchange"] = retry_exchange_name(self.name)
            arguments["x-dead-letter-routing-key"] = DEAD_LETTER_KEY
            if self.type == "quorum":
                arguments["x-delivery-limit"] = self.retry.delivery_limit
        return arguments


class BindingSpec(_Spec):
    exchange: str
    queue: str
    routing_key: str = "#"
    arguments: dict[str, Any] = Field(default_factory=dict)


class SchemaSpec(_Spec):
    """A JSON Schema the gateway checks payloads against before publishing them."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    exchange: str
    # A glob (`*` matches anything, dots included): `order.*`, `*`, or one exact key.
    routing_key: str = "*"
    json_schema: dict[str, Any] = Field(alias="schema")


def retry_exchange_name(queue: str) -> str:
    return f"{queue}.retry"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    return f"{queue}.retry.{label(delay_ms)}"


def delay_routing_key(delay_ms: int) -> str:
    return label(delay_ms)


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


class Topology(_Spec):
    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()
    schemas: tuple[SchemaSpec, ...] = ()
    # The store's retention for every queue that does not set its own.
    retention: RetentionSpec = RetentionSpec()
    # Push targets, at most one per queue (hareway/subscriptions.py).
    subscriptions: tuple[SubscriptionSpec, ...] = ()

    @model_validator(mode="after")
    def _subscriptions_name_declared_queues(self) -> Topology:
        queues = {queue.name: queue for queue in self.queues}
        seen: set[str] = set()
        for subscription in self.subscriptions:
            if subscription.queue not in queues:
                raise ValueError(f"subscription names undeclared queue {subscription.queue!r}")
            if subscription.queue in seen:
                raise ValueError(f"queue {subscription.queue!r} has two subscriptions")
            retry = queues[subscription.queue].retry
            if retry is not None and subscription.breaker.failures < retry.max_attempts:
                # Else one message the target always fails could trip the breaker alone,
                # and hold its queue for as long as that one message keeps failing.
                raise ValueError(
                    f"subscription of {subscription.queue!r}: breaker.failures must be at "
                    f"least the ladder's max_attempts ({retry.max_attempts})"
                )
            seen.add(subscription.queue)
        return self

    def subscription(self, queue: str) -> SubscriptionSpec | None:
        return next((spec for spec in self.subscriptions if spec.queue == queue), None)

    @model_validator(mode="after")
    def _bindings_name_declared_entities(self) -> Topology:
        exchanges = {exchange.name for exchange in self.exchanges}
        queues = {queue.name for queue in self.queues}
        for binding in self.bindings:
            if binding.exchange not in exchanges:
                raise ValueError(f"binding names undeclared exchange {binding.exchange!r}")
            if binding.queue not in queues:
                raise ValueError(f"binding names undeclared queue {binding.queue!r}")
        return self

    def queue(self, name: str) -> QueueSpec | None:
        return next((queue for queue in self.queues if queue.name == name), None)

    def retention_of(self, queue: str) -> RetentionSpec:
        """The retention of a queue's stored messages; the defaults for one not declared."""
        spec = self.queue(queue)
        if spec is None or spec.retention is None:
            return self.retention
        return spec.retention.under(self.retention)

    def expanded(self) -> Topology:
        """This topology plus every queue's retry exchange, delay queues and dead-letter queue."""
        exchanges = list(self.exchanges)
        queues = list(self.queues)
        bindings = list(self.bindings)
        for queue in self.queues:
            if queue.retry is not None:
                ladder = _ladder(queue, queue.retry)
                exchanges += ladder.exchanges
                queues += ladder.queues
                bindings += ladder.bindings
        return Topology(
            exchanges=tuple(exchanges),
            queues=tuple(queues),
            bindings=tuple(bindings),
            schemas=self.schemas,
            retention=self.retention,
            subscriptions=self.subscriptions,
        )


def _ladder(queue: QueueSpec, retry: RetrySpec) -> Topology:
    """One queue's retry entities.

    A failed message is published to the queue's own direct retry exchange with the delay
    as routing key; the delay queue holds it for its TTL, then dead-letters it through the
    default exchange straight back to this queue only, never to the original exchange
    (which would deliver it again to every other bound queue).
    """
    exchange = retry_exchange_name(queue.name)
    # Same kind of queue as the one it serves: replicated queues keep replicated retries.
    kind: dict[str, Any] = {"type": queue.type}
    held: dict[str, Any] = {}
    if queue.type == "quorum":
        # Quorum queues dead-letter at most once unless told otherwise; a message on its
        # way back from a delay queue must not be lost.
        held = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    delay_queues = [
        QueueSpec(
            name=delay_queue_name(queue.name, delay),
            **kind,
            arguments={
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue.name,
                **held,
            },
        )
        for delay in dict.fromkeys(retry.delays)
    ]
    dead_letters = QueueSpec(name=dead_letter_queue_name(queue.name), **kind)
    return Topology(
        exchanges=(ExchangeSpec(name=exchange, type="direct"),),
        queues=(*delay_queues, dead_letters),
        bindings=(
            *(
                BindingSpec(exchange=exchange, queue=delay_queue.name, routing_key=key)
                for delay_queue, key in zip(
                    delay_queues,
                    (delay_routing_key(delay) for delay in dict.fromkeys(retry.delays)),
                    strict=True,
                )
            ),
            BindingSpec(exchange=exchange, queue=dead_letters.name, routing_key=DEAD_LETTER_KEY),
        ),
    )


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    try:
        document = yaml.safe_load(text) or {}
        return Topology.model_validate(document)
    except (yaml.YAMLError, ValueError) as exc:
        raise TopologyError(f"{source}: {exc}") from exc


def load_topology(path: str | Path | None) -> Topology:
    """Read the topology file; no file configured means an empty topology."""
    if path is None or str(path) == "":
        return Topology()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {file}: {exc}") from exc
    return parse_topology(text, str(file))


async def declare_topology(connection: AbstractConnection, topology: Topology) -> None:
    """Declare every entity of the topology, retry ladders included; safe from many processes.

    A failed declaration closes its channel, so it runs on a channel of its own.
    """
    topology = topology.expanded()
    channel = await connection.channel()
    try:
        for spec in topology.exchanges:
            await _declare(f"exchange {spec.name!r}", declare_exchange(channel, spec))
        for queue_spec in topology.queues:
            await _declare(f"queue {queue_spec.name!r}", declare_queue(channel, queue_spec))
        for binding in topology.bindings:
            await _declare(binding_label(binding), bind(channel, binding))
    finally:
        if not channel.is_closed:
            await channel.close()


def binding_label(binding: BindingSpec) -> str:
    return f"binding {binding.exchange!r} -> {binding.queue!r} ({binding.routing_key!r})"


async def declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> None:
    await channel.declare_exchange(
        spec.name,
        ExchangeType(spec.type),
        durable=spec.durable,
        auto_delete=spec.auto_delete,
        arguments=spec.arguments or None,
    )


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> None:
    await channel.declare_queue(
        spec.name, durable=spec.durable, arguments=spec.broker_arguments() or None
    )


async def bind(channel: AbstractChannel, binding: BindingSpec) -> None:
    # By name: binding needs no declared objects, so it never redeclares anything.
    underlay = await channel.get_underlay_channel()
    await underlay.queue_bind(
        binding.queue,
        binding.exchange,
        routing_key=binding.routing_key,
        arguments=binding.arguments or None,
    )


async def _declare(what: str, declaration: Awaitable[None]) -> None:
    try:
        await declaration
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyConflict(f"{what} exists with other settings: {exc}") from exc
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise TopologyConflict(f"{what}: access refused: {exc}") from exc
