"""Per exchange/routing-key JSON Schemas, checked before publishing: failures are 422s."""

from __future__ import annotations

from typing import Any

from gateway.errors import SchemaViolation
from hareway.schemas import InvalidSchema, SchemaRules

__all__ = ["InvalidSchema", "Schemas"]


class Schemas(SchemaRules):
    def check(self, exchange: str, routing_key: str, payload: Any, field: str = "payload") -> None:
        """Raise `SchemaViolation` naming the failing field, e.g. `payload.order_id`."""
        failure = self.failure(exchange, routing_key, payload, field)
        if failure is not None:
            path, message = failure
            raise SchemaViolation(
                f"{path}: {message}",
                errors=[{"field": path, "message": message, "type": "json_schema"}],
            )
