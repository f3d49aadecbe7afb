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


def test_a_violation_names_the_field() -> None:
    found = rules().violation("orders", "order.created", {"order_id": "x"})
    assert found is not None
    assert found.startswith("payload.order_id")


def test_only_matching_routes_are_checked() -> None:
    assert rules().violation("orders", "order.created", {"order_id": 1}) is None
    assert rules().violation("orders", "invoice.created", {}) is None
    assert rules().violation("payments", "order.created", {}) is None
    assert SchemaRules(()).violation("orders", "order.created", {}) is None


def test_an_invalid_schema_is_refused_at_start() -> None:
    spec = SchemaSpec.model_validate({"exchange": "orders", "schema": {"type": "no-such-type"}})
    with pytest.raises(InvalidSchema, match="orders"):
        SchemaRules((spec,))
