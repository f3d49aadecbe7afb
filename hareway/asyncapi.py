"""An AsyncAPI 3.0 document of the topology: what goes where, and what it looks like.

Every exchange and every queue is a channel with its AMQP channel binding (binding version
0.3.0): an exchange `is: routingKey`, a queue `is: queue`. A queue's retry ladder (its retry
exchange, delay queues and dead-letter queue, as `Topology.expanded` makes them) are
channels too, tagged and marked with `x-hareway-role`. Messages come from the topology's
JSON Schemas, one per `schemas` entry, plus one "any JSON" message per exchange that no
`routing_key: "*"` schema covers: the gateway publishes those unchecked. A queue's channel
carries the messages of the exchanges bound to it that its binding can route; the ladder's
channels carry the messages of the queue they serve.

Operations: `send` on each exchange (the gateway's publish, persistent and mandatory, and
the consumers' republish to a retry exchange), `receive` on each declared queue (the
consumers, who store a message and ack after the commit).

The gateway serves it at `/asyncapi.json`; `hareway topology asyncapi` writes it. It names
no broker address: the document describes the topology, not where its broker runs.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from hareway import __version__
from hareway.durations import label
from hareway.topology import (
    BindingSpec,
    ExchangeSpec,
    QueueSpec,
    SchemaSpec,
    Topology,
    dead_letter_queue_name,
    delay_queue_name,
    retry_exchange_name,
)
from hareway.wire import JSON_CONTENT_TYPE

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
# What the gateway and the consumers' republish set on every message.
_PERSISTENT = 2
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def asyncapi_document(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `topology` (plain JSON values, ready to dump)."""
    return _Builder(topology, vhost).document()


class _Keys:
    """Component keys (`^[A-Za-z0-9_.-]+$`), unique, made from names that may hold anything."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def make(self, text: str) -> str:
        base = _KEY_UNSAFE.sub("_", text) or "_"
        key, n = base, 1
        while key in self._taken:
            n += 1
            key = f"{base}_{n}"
        self._taken.add(key)
        return key


class _Builder:
    def __init__(self, topology: Topology, vhost: str) -> None:
        self.topology = topology
        self.expanded = topology.expanded()
        self.vhost = vhost
        self.channel_keys = _Keys()
        self.message_keys = _Keys()
        self.operation_keys = _Keys()
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        # Per exchange: its messages' component keys, with the routing-key glob of each
        # (None for the "any JSON" message, which every binding can route).
        self.exchange_messages: dict[str, list[tuple[str, str | None]]] = {}
        self.exchange_channel: dict[str, str] = {}
        self.queue_channel: dict[str, str] = {}
        self.queue_messages: dict[str, list[str]] = {}

    def document(self) -> dict[str, Any]:
        exchanges = {exchange.name: exchange for exchange in self.topology.exchanges}
        for spec in self.topology.schemas:
            exchanges.setdefault(spec.exchange, ExchangeSpec(name=spec.exchange))
        declared = {exchange.name for exchange in self.topology.exchanges}
        for exchange in exchanges.values():
            self._exchange_messages(exchange.name)
            self._exchange_channel(exchange, exchange.name in declared)
        for queue in self.topology.queues:
            self._queue_channel(queue)
        for queue in self.topology.queues:
            if queue.retry is not None:
                self._ladder_channels(queue)
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": "hareway topology",
                "version": __version__,
                "description": (
                    "The exchanges, queues and retry ladders of a hareway topology file, "
                    "with the JSON Schemas the gateway checks payloads against. Publish "
                    "over HTTP with `POST /v1/exchanges/{exchange}/messages`; read what "
                    "the consumers stored with `GET /v1/queues/{queue}/messages`."
                ),
            },
            "defaultContentType": JSON_CONTENT_TYPE,
            "channels": self.channels,
            "operations": self.operations,
            "components": {"messages": self.messages},
        }

    # Messages

    def _exchange_messages(self, exchange: str) -> None:
        found: list[tuple[str, str | None]] = []
        specs = [spec for spec in self.topology.schemas if spec.exchange == exchange]
        for spec in specs:
            key = self.message_keys.make(f"{exchange}.{spec.routing_key}")
            self.messages[key] = _schema_message(spec)
            found.append((key, spec.routing_key))
        if not any(spec.routing_key == "*" for spec in specs):
            key = self.message_keys.make(f"{exchange}.any")
            self.messages[key] = _any_message(exchange, checked=[s.routing_key for s in specs])
            found.append((key, None))
        self.exchange_messages[exchange] = found

    # Channels

    def _add_channel(self, key_from: str, channel: dict[str, Any]) -> str:
        key = self.channel_keys.make(key_from)
        self.channels[key] = channel
        return key

    def _exchange_channel(self, exchange: ExchangeSpec, declared: bool) -> None:
        keys = [key for key, _ in self.exchange_messages[exchange.name]]
        binding: dict[str, Any] = {"name": exchange.name, "vhost": self.vhost}
        if declared:
            binding |= {
                "type": exchange.type,
                "durable": exchange.durable,
                "autoDelete": exchange.auto_delete,
            }
        description = (
            f"The {exchange.type} exchange `{exchange.name}`: publish to it with "
            f"`POST /v1/exchanges/{exchange.name}/messages` (or `/batch`)."
            if declared
            else f"The exchange `{exchange.name}`, not declared by the topology file; its "
            "schemas apply to publishes through the gateway."
        )
        amqp: dict[str, Any] = {
            "is": "routingKey",
            "exchange": binding,
            "bindingVersion": AMQP_BINDING_VERSION,
        }
        if exchange.arguments:
            amqp["x-arguments"] = exchange.arguments
        channel_key = self._add_channel(
            f"exchange.{exchange.name}",
            {
                "address": exchange.name,
                "title": f"exchange {exchange.name}",
                "description": description,
                "messages": _refs(keys),
                "tags": [{"name": "exchange"}],
                "bindings": {"amqp": amqp},
                "x-hareway-role": "exchange",
            },
        )
        self.exchange_channel[exchange.name] = channel_key
        self._operation(
            f"publish.{exchange.name}",
            "send",
            channel_key,
            keys,
            f"Publish to `{exchange.name}`: the gateway answers 202 only once the broker "
            "confirmed the message; an unroutable one is refused (422).",
            {"deliveryMode": _PERSISTENT, "mandatory": True},
        )

    def _queue_channel(self, queue: QueueSpec) -> None:
        bound = [b for b in self.topology.bindings if b.queue == queue.name]
        keys = list(dict.fromkeys(key for binding in bound for key in self._routable(binding)))
        self.queue_messages[queue.name] = keys
        extensions: dict[str, Any] = {
            "x-hareway-role": "queue",
            "x-hareway-bindings": [_binding(binding) for binding in bound],
        }
        description = (
            f"The {queue.type} queue `{queue.name}`. Its consumers store every message and "
            f"ack after the commit; read them with `GET /v1/queues/{queue.name}/messages`."
        )
        if queue.retry is not None:
            extensions["x-hareway-retry"] = {
                "delaysMs": list(queue.retry.delays),
                "maxAttempts": queue.retry.max_attempts,
                "retryExchange": retry_exchange_name(queue.name),
                "deadLetterQueue": dead_letter_queue_name(queue.name),
            }
            description += (
                f" A failed message is retried up to {queue.retry.max_attempts} attempts "
                f"through `{retry_exchange_name(queue.name)}`, then dead-lettered to "
                f"`{dead_letter_queue_name(queue.name)}`."
            )
        channel_key = self._add_channel(
            f"queue.{queue.name}",
            self._queue(queue, description, keys, "queue", extensions),
        )
        self.queue_channel[queue.name] = channel_key
        self._operation(
            f"consume.{queue.name}",
            "receive",
            channel_key,
            keys,
            f"The consumers of `{queue.name}`: each message is stored, then acknowledged.",
            {"ack": True},
        )

    def _ladder_channels(self, queue: QueueSpec) -> None:
        assert queue.retry is not None
        keys = self.queue_messages[queue.name]
        expanded_queues = {spec.name: spec for spec in self.expanded.queues}
        retry_exchange = retry_exchange_name(queue.name)
        channel_key = self._add_channel(
            f"exchange.{retry_exchange}",
            {
                "address": retry_exchange,
                "title": f"retry exchange of {queue.name}",
                "description": (
                    f"Where the consumers of `{queue.name}` republish a failed message, with "
                    "`x-hareway-attempts` and `x-hareway-last-error` in its headers; the "
                    "routing key names the delay (or `dlq`). The gateway refuses to "
                    "publish here."
                ),
                "messages": _refs(keys),
                "tags": [{"name": "retry"}],
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": retry_exchange,
                            "type": "direct",
                            "durable": True,
                            "autoDelete": False,
                            "vhost": self.vhost,
                        },
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
                "x-hareway-role": "retry-exchange",
                "x-hareway-queue": queue.name,
            },
        )
        self._operation(
            f"retry.{queue.name}",
            "send",
            channel_key,
            keys,
            f"The consumers of `{queue.name}` republish a failed message down its ladder, "
            "and ack it once the broker confirmed that publish.",
            {"deliveryMode": _PERSISTENT, "mandatory": True},
        )
        for delay in dict.fromkeys(queue.retry.delays):
            name = delay_queue_name(queue.name, delay)
            description = (
                f"Holds a failed message of `{queue.name}` for {label(delay)} (its TTL), then "
                f"dead-letters it back to `{queue.name}` alone."
            )
            self._add_channel(
                f"queue.{name}",
                self._queue(
                    expanded_queues[name],
                    description,
                    keys,
                    "retry",
                    {"x-hareway-role": "delay-queue", "x-hareway-queue": queue.name},
                ),
            )
        name = dead_letter_queue_name(queue.name)
        self._add_channel(
            f"queue.{name}",
            self._queue(
                expanded_queues[name],
                f"The dead letters of `{queue.name}`: the messages that failed "
                f"{queue.retry.max_attempts} attempts, or that the broker gave up on. List "
                f"and redrive them with `/v1/queues/{queue.name}/dead-letters`.",
                keys,
                "dead-letter",
                {"x-hareway-role": "dead-letter-queue", "x-hareway-queue": queue.name},
            ),
        )

    def _queue(
        self,
        queue: QueueSpec,
        description: str,
        keys: list[str],
        tag: str,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        amqp: dict[str, Any] = {
            "is": "queue",
            "queue": {
                "name": queue.name,
                "durable": queue.durable,
                "exclusive": False,
                "autoDelete": False,
                "vhost": self.vhost,
            },
            "bindingVersion": AMQP_BINDING_VERSION,
            "x-queue-type": queue.type,
        }
        arguments = queue.broker_arguments()
        if arguments:
            amqp["x-arguments"] = arguments
        return {
            "address": queue.name,
            "title": f"queue {queue.name}",
            "description": description,
            "messages": _refs(keys),
            "tags": [{"name": tag}],
            "bindings": {"amqp": amqp},
            **extensions,
        }

    def _routable(self, binding: BindingSpec) -> list[str]:
        """The messages of the binding's exchange that its routing key can route."""
        kind = next(
            (e.type for e in self.topology.exchanges if e.name == binding.exchange), "topic"
        )
        return [
            key
            for key, glob in self.exchange_messages.get(binding.exchange, [])
            if glob is None or _may_route(kind, binding.routing_key, glob)
        ]

    # Operations

    def _operation(
        self,
        key_from: str,
        action: str,
        channel_key: str,
        message_keys: list[str],
        description: str,
        amqp: dict[str, Any],
    ) -> None:
        pointer = _pointer(channel_key)
        self.operations[self.operation_keys.make(key_from)] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{pointer}"},
            "description": description,
            "messages": [
                {"$ref": f"#/channels/{pointer}/messages/{_pointer(key)}"} for key in message_keys
            ],
            "bindings": {"amqp": {**amqp, "bindingVersion": AMQP_BINDING_VERSION}},
        }


def _schema_message(spec: SchemaSpec) -> dict[str, Any]:
    return {
        "name": spec.routing_key,
        "title": f"{spec.exchange} {spec.routing_key}",
        "summary": f"A message to `{spec.exchange}` with routing key `{spec.routing_key}`",
        "description": (
            "Its payload must pass this JSON Schema: the gateway answers 422 otherwise, and "
            "the consumers dead-letter one that reached the broker another way. For a "
            "CloudEvent the schema applies to the event's `data`."
        ),
        "contentType": JSON_CONTENT_TYPE,
        "payload": {
            "schemaFormat": _schema_format(spec.json_schema),
            "schema": spec.json_schema,
        },
        "x-hareway-routing-key": spec.routing_key,
    }


def _schema_format(schema: dict[str, Any]) -> str:
    # fastjsonschema compiles drafts 4, 6 and 7, by the schema's `$schema` (7 without one).
    declared = str(schema.get("$schema", ""))
    draft = next((d for d in ("draft-04", "draft-06") if d in declared), "draft-07")
    return f"application/schema+json;version={draft}"


def _any_message(exchange: str, checked: list[str]) -> dict[str, Any]:
    besides = f" other than {', '.join(f'`{glob}`' for glob in checked)}" if checked else ""
    return {
        "name": "any",
        "title": f"{exchange} (no schema)",
        "summary": f"A message to `{exchange}` with any routing key{besides}",
        "description": (
            "No schema in the topology applies: any JSON value (or, as a binary-mode "
            "CloudEvent, any bytes) is published as sent."
        ),
        "contentType": JSON_CONTENT_TYPE,
        "payload": {},
    }


def _binding(binding: BindingSpec) -> dict[str, Any]:
    found: dict[str, Any] = {"exchange": binding.exchange, "routingKey": binding.routing_key}
    if binding.arguments:
        found["arguments"] = binding.arguments
    return found


def _refs(keys: list[str]) -> dict[str, Any]:
    return {key: {"$ref": f"#/components/messages/{_pointer(key)}"} for key in keys}


def _pointer(key: str) -> str:
    # Component keys hold no `~` or `/`; escaped anyway, as RFC 6901 asks of any token.
    return key.replace("~", "~0").replace("/", "~1")


def _may_route(exchange_type: str, binding_key: str, glob: str) -> bool:
    """Whether a binding may route a message whose routing key a schema's glob matches.

    `False` only when it surely cannot: an exact key the binding does not match, or a
    glob (`invoice.*`) whose leading words the binding's pattern never produces.
    """
    if exchange_type in ("fanout", "headers"):
        return True
    if exchange_type == "direct":
        return fnmatchcase(binding_key, glob)
    if "*" not in glob:
        return _topic_matches(binding_key, glob)
    # The words before the one holding the first `*` are literal in every matching key.
    literal = glob[: glob.index("*")].split(".")[:-1]
    pattern = binding_key.split(".")
    for i, word in enumerate(literal):
        if i >= len(pattern):
            return False
        if pattern[i] == "#":
            return True
        if pattern[i] not in ("*", word):
            return False
    return True


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""
    words, parts = pattern.split("."), key.split(".")

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(parts)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        if j == len(parts):
            return False
        return words[i] in ("*", parts[j]) and match(i + 1, j + 1)

    return match(0, 0)
