"""The topology model: exchanges, queues and bindings declared from one YAML file.

Both processes declare it at start. Declaring is idempotent: an entity that already exists
with the same settings is left alone; one with other settings is a `TopologyConflict`,
reported with the name and the broker's reason instead of a bare channel error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import aio_pika
import aiormq
import yaml
from aio_pika.abc import AbstractConnection, ExchangeType
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hareway.errors import HarewayError


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


class QueueSpec(_Spec):
    name: str = Field(min_length=1, max_length=255)
    type: Literal["classic", "quorum"] = "classic"
    durable: bool = True
    arguments: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _quorum_is_durable(self) -> QueueSpec:
        if self.type == "quorum" and not self.durable:
            raise ValueError(f"quorum queue {self.name!r} must be durable")
        return self

    def broker_arguments(self) -> dict[str, Any]:
        arguments = dict(self.arguments)
        if self.type == "quorum":
            arguments["x-queue-type"] = "quorum"
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


class Topology(_Spec):
    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()
    schemas: tuple[SchemaSpec, ...] = ()

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
    """Declare every entity of the topology; safe to run from many processes at once.

    A failed declaration closes its channel, so it runs on a channel of its own.
    """
    channel = await connection.channel()
    try:
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        for spec in topology.exchanges:
            exchanges[spec.name] = await _declare(
                f"exchange {spec.name!r}",
                channel.declare_exchange(
                    spec.name,
                    ExchangeType(spec.type),
                    durable=spec.durable,
                    auto_delete=spec.auto_delete,
                    arguments=spec.arguments or None,
                ),
            )
        queues: dict[str, aio_pika.abc.AbstractQueue] = {}
        for queue_spec in topology.queues:
            queues[queue_spec.name] = await _declare(
                f"queue {queue_spec.name!r}",
                channel.declare_queue(
                    queue_spec.name,
                    durable=queue_spec.durable,
                    arguments=queue_spec.broker_arguments() or None,
                ),
            )
        for binding in topology.bindings:
            await _declare(
                f"binding {binding.exchange!r} -> {binding.queue!r} ({binding.routing_key!r})",
                queues[binding.queue].bind(
                    exchanges[binding.exchange],
                    routing_key=binding.routing_key,
                    arguments=binding.arguments or None,
                ),
            )
    finally:
        if not channel.is_closed:
            await channel.close()


async def _declare(what: str, declaration: Any) -> Any:
    try:
        return await declaration
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyConflict(f"{what} exists with other settings: {exc}") from exc
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise TopologyConflict(f"{what}: access refused: {exc}") from exc
