"""The AsyncAPI document of a topology, validated against the official AsyncAPI 3.0.0 JSON
Schema (tests/fixtures/asyncapi, from `@asyncapi/specs`: a schema we did not write), and
`hareway topology asyncapi` writing it."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hareway.asyncapi import asyncapi_document
from hareway.topology import Topology, parse_topology

SCHEMA = (
    Path(__file__).resolve().parents[1] / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"
)

ORDER_CREATED = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {"order_id": {"type": "integer"}, "amount": {"type": "number"}},
}
TOPOLOGY = {
    "exchanges": [
        {"name": "orders", "type": "topic"},
        {"name": "audit", "type": "fanout", "durable": False, "auto_delete": True},
        {"name": "billing", "type": "direct"},
    ],
    "queues": [
        {
            "name": "orders.persist",
            "type": "quorum",
            "retry": {"delays": ["1s", "10s", "1m"], "max_attempts": 4},
        },
        {"name": "invoices", "retry": {"delays": ["500ms"], "max_attempts": 2}},
        {"name": "audit.all", "arguments": {"x-max-length": 1000}},
        {"name": "billing.eu"},
    ],
    "bindings": [
        {"exchange": "orders", "queue": "orders.persist", "routing_key": "order.#"},
        {"exchange": "orders", "queue": "invoices", "routing_key": "invoice.*"},
        {"exchange": "audit", "queue": "audit.all"},
        {"exchange": "billing", "queue": "billing.eu", "routing_key": "eu"},
    ],
    "schemas": [
        {"exchange": "orders", "routing_key": "order.created", "schema": ORDER_CREATED},
        {
            "exchange": "orders",
            "routing_key": "invoice.*",
            "schema": {"type": "object", "required": ["invoice_id"]},
        },
        {"exchange": "billing", "routing_key": "*", "schema": {"type": "object"}},
        # An exchange the file does not declare (it exists on the broker, say).
        {"exchange": "legacy/feed", "routing_key": "*", "schema": {"type": "array"}},
    ],
}


@cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def violations(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message[:200]}"
        for error in validator().iter_errors(document)
    ]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(Topology.model_validate(TOPOLOGY), vhost="prod")


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert violations(document) == []
    assert document["asyncapi"] == "3.0.0"
    # Plain JSON all the way down, as served.
    assert json.loads(json.dumps(document)) == document


@pytest.mark.parametrize(
    ("where", "breakage"),
    [
        (("channels", "exchange.orders", "bindings", "amqp", "exchange"), {"type": "fan"}),
        (("channels", "queue.invoices", "bindings", "amqp"), {"exchange": {"name": "x"}}),
        (("operations", "publish.orders"), {"action": "publish"}),
        (("info",), {"title": 42}),
    ],
)
def test_the_official_schema_catches_a_broken_document(
    document: dict[str, Any], where: tuple[str, ...], breakage: dict[str, Any]
) -> None:
    # The validation above can fail: the same document, broken in one place, does not pass.
    broken = copy.deepcopy(document)
    target = broken
    for key in where:
        target = target[key]
    target.update(breakage)
    assert violations(broken)


def test_exchanges_are_channels_with_their_amqp_bindings(document: dict[str, Any]) -> None:
    channels = document["channels"]
    orders = channels["exchange.orders"]
    assert orders["address"] == "orders"
    assert orders["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": {
            "name": "orders",
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "prod",
        },
        "bindingVersion": "0.3.0",
    }
    audit = channels["exchange.audit"]["bindings"]["amqp"]["exchange"]
    assert (audit["type"], audit["durable"], audit["autoDelete"]) == ("fanout", False, True)
    # Named by a schema only: a channel without the properties the file does not give.
    legacy = channels["exchange.legacy_feed"]
    assert legacy["address"] == "legacy/feed"
    assert legacy["bindings"]["amqp"]["exchange"] == {"name": "legacy/feed", "vhost": "prod"}

    publish = document["operations"]["publish.orders"]
    assert publish["action"] == "send"
    assert publish["channel"] == {"$ref": "#/channels/exchange.orders"}
    assert publish["bindings"]["amqp"]["deliveryMode"] == 2
    assert publish["bindings"]["amqp"]["mandatory"] is True


def test_queues_are_channels_with_their_properties_and_bindings(
    document: dict[str, Any],
) -> None:
    persist = document["channels"]["queue.orders.persist"]
    amqp = persist["bindings"]["amqp"]
    assert amqp["is"] == "queue"
    assert amqp["queue"] == {
        "name": "orders.persist",
        "durable": True,
        "exclusive": False,
        "autoDelete": False,
        "vhost": "prod",
    }
    assert amqp["x-queue-type"] == "quorum"
    assert amqp["x-arguments"]["x-dead-letter-exchange"] == "orders.persist.retry"
    assert persist["x-hareway-bindings"] == [{"exchange": "orders", "routingKey": "order.#"}]
    assert persist["x-hareway-retry"] == {
        "delaysMs": [1000, 10_000, 60_000],
        "maxAttempts": 4,
        "retryExchange": "orders.persist.retry",
        "deadLetterQueue": "orders.persist.dlq",
    }
    audit = document["channels"]["queue.audit.all"]["bindings"]["amqp"]
    assert audit["x-arguments"] == {"x-max-length": 1000}
    consume = document["operations"]["consume.orders.persist"]
    assert consume["action"] == "receive"
    assert consume["bindings"]["amqp"]["ack"] is True


def test_message_payloads_are_the_topologys_schemas(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    created = messages["orders.order.created"]
    assert created["payload"] == {
        "schemaFormat": "application/schema+json;version=draft-07",
        "schema": ORDER_CREATED,
    }
    assert created["contentType"] == "application/json"
    assert created["x-hareway-routing-key"] == "order.created"
    assert messages["orders.invoice._"]["payload"]["schema"]["required"] == ["invoice_id"]
    # Routing keys no schema covers are published unchecked: one "any" message says so.
    assert messages["orders.any"]["payload"] == {}
    # A `*` schema covers every key of its exchange: no "any" message there.
    assert "billing.any" not in messages

    channels = document["channels"]

    def carried(channel: str) -> set[str]:
        return set(channels[channel]["messages"])

    assert carried("exchange.orders") == {"orders.order.created", "orders.invoice._", "orders.any"}
    # What each binding can route: `order.#` never carries an `invoice.*` message.
    assert carried("queue.orders.persist") == {"orders.order.created", "orders.any"}
    assert carried("queue.invoices") == {"orders.invoice._", "orders.any"}
    assert carried("queue.billing.eu") == {"billing._"}
    for reference in channels["queue.orders.persist"]["messages"].values():
        assert reference["$ref"].removeprefix("#/components/messages/") in messages
    operation = document["operations"]["consume.orders.persist"]
    assert {ref["$ref"] for ref in operation["messages"]} == {
        "#/channels/queue.orders.persist/messages/orders.order.created",
        "#/channels/queue.orders.persist/messages/orders.any",
    }


def test_each_retry_ladder_is_channels_of_its_own(document: dict[str, Any]) -> None:
    channels = document["channels"]
    retry = channels["exchange.orders.persist.retry"]
    assert retry["x-hareway-role"] == "retry-exchange"
    assert retry["bindings"]["amqp"]["exchange"]["type"] == "direct"
    for delay in ("1s", "10s", "1m"):
        held = channels[f"queue.orders.persist.retry.{delay}"]
        assert held["x-hareway-role"] == "delay-queue"
        arguments = held["bindings"]["amqp"]["x-arguments"]
        assert arguments["x-dead-letter-routing-key"] == "orders.persist"
        assert held["bindings"]["amqp"]["x-queue-type"] == "quorum"
    assert (
        channels["queue.orders.persist.retry.1m"]["bindings"]["amqp"]["x-arguments"][
            "x-message-ttl"
        ]
        == 60_000
    )
    dead = channels["queue.orders.persist.dlq"]
    assert dead["x-hareway-role"] == "dead-letter-queue"
    assert dead["tags"] == [{"name": "dead-letter"}]
    # The ladder carries what its queue receives.
    assert set(dead["messages"]) == set(channels["queue.orders.persist"]["messages"])
    assert document["operations"]["retry.orders.persist"]["action"] == "send"
    assert "queue.invoices.retry.500ms" in channels
    assert "queue.invoices.dlq" in channels
    assert "queue.audit.all.dlq" not in channels  # no ladder, no channels


def test_an_empty_topology_is_a_valid_document() -> None:
    document = asyncapi_document(Topology())
    assert violations(document) == []
    assert document["channels"] == {}


def test_the_example_topology_file_is_a_valid_document() -> None:
    text = (Path(__file__).resolve().parents[2] / "infra" / "topology.yaml").read_text()
    assert violations(asyncapi_document(parse_topology(text))) == []


@pytest.mark.timeout(60)
async def test_the_cli_writes_the_same_document(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(TOPOLOGY))
    output = tmp_path / "asyncapi.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from hareway.cli import app; app()",
        "topology",
        "asyncapi",
        "-f",
        str(topology),
        "--output",
        str(output),
        "--vhost",
        "prod",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await process.communicate()
    assert process.returncode == 0, said.decode()
    written = json.loads(output.read_text())
    assert written == asyncapi_document(Topology.model_validate(TOPOLOGY), vhost="prod")
    assert violations(written) == []
