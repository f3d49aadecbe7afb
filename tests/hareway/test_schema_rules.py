"""The topology's JSON Schemas as the consumers apply them."""

from __future__ import annotations

import pytest

from hareway.schemas import InvalidSchema, SchemaRules
from hareway.topology import SchemaSpec

ORDER = {
    "type": "object",
    "required": ["order_id"],
    "properties": {"order_id": {"type": "integer"}},
}


def rules(routing_key: str = "order.*") -> SchemaRules:
    spec = SchemaSpec.model_validate(
        {"exchange": "orders", "routing_key": routing_key, "schema": ORDER}
    )
    return SchemaRules((spec,))


JSON = "application/json"
STRUCTURED = "application/cloudevents+json"


def test_a_violation_names_the_field() -> None:
    found = rules().violation("orders", "order.created", JSON, {"order_id": "x"})
    assert found is not None
    assert found.startswith("payload.order_id")


def test_only_matching_routes_are_checked() -> None:
    assert rules().violation("orders", "order.created", JSON, {"order_id": 1}) is None
    assert rules().violation("orders", "invoice.created", JSON, {}) is None
    assert rules().violation("payments", "order.created", JSON, {}) is None
    assert SchemaRules(()).violation("orders", "order.created", JSON, {}) is None


def test_a_structured_cloudevent_is_checked_on_its_data_as_the_gateway_checks_it() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "order.created"}
    good = {**event, "data": {"order_id": 1}}
    bad = {**event, "data": {"order_id": "x"}}
    assert rules().violation("orders", "order.created", STRUCTURED, good) is None
    found = rules().violation("orders", "order.created", STRUCTURED, bad)
    assert found is not None
    assert found.startswith("payload.data.order_id")
    # Data that is not JSON is not the schema's to judge; neither is an event without data.
    binary = {**event, "datacontenttype": "application/octet-stream", "data": "AAEC"}
    assert rules().violation("orders", "order.created", STRUCTURED, binary) is None
    assert rules().violation("orders", "order.created", STRUCTURED, event) is None


def test_each_event_of_a_cloudevents_batch_is_checked() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "order.created"}
    batch = [{**event, "data": {"order_id": 1}}, {**event, "data": {}}]
    found = rules().violation(
        "orders", "order.created", "application/cloudevents-batch+json", batch
    )
    assert found is not None
    assert found.startswith("payload.1.data")


def test_an_invalid_schema_is_refused_at_start() -> None:
    spec = SchemaSpec.model_validate({"exchange": "orders", "schema": {"type": "no-such-type"}})
    with pytest.raises(InvalidSchema, match="orders"):
        SchemaRules((spec,))
