"""The topology's per exchange/routing-key JSON Schemas, compiled once, matched by glob.

The gateway checks them before publishing (`gateway.schemas`); the consumers use the same
rules to dead-letter a message that can never succeed (one published past the gateway).
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import fastjsonschema

from hareway.errors import HarewayError
from hareway.topology import SchemaSpec
from hareway.wire import schema_subjects

Validator = Callable[[Any], Any]

# Routing keys are the publishers' to choose: remember at most this many lookups.
_CACHE_LIMIT = 4096


class InvalidSchema(HarewayError):
    """A schema in the topology file is not a valid JSON Schema."""


class SchemaRules:
    def __init__(self, specs: tuple[SchemaSpec, ...]) -> None:
        self._rules: list[tuple[str, str, Validator]] = []
        for spec in specs:
            try:
                validator = fastjsonschema.compile(spec.json_schema)
            except fastjsonschema.JsonSchemaDefinitionException as exc:
                raise InvalidSchema(
                    f"schema for {spec.exchange!r}/{spec.routing_key!r}: {exc}"
                ) from exc
            self._rules.append((spec.exchange, spec.routing_key, validator))
        self._found: dict[tuple[str, str], list[Validator]] = {}

    def violation(
        self, exchange: str, routing_key: str, content_type: str | None, document: Any
    ) -> str | None:
        """Why a JSON message fails a schema for its route (e.g. `payload.order_id: must be
        integer`), or None when it passes or no schema applies. For CloudEvents the schema
        applies to the event's data (see `schema_subjects`)."""
        if not self._rules or not self._validators(exchange, routing_key):
            return None
        for path, subject in schema_subjects(content_type, document):
            field = f"payload.{path}" if path else "payload"
            failure = self.failure(exchange, routing_key, subject, field)
            if failure is not None:
                return f"{failure[0]}: {failure[1]}"
        return None

    def failure(
        self, exchange: str, routing_key: str, payload: Any, field: str = "payload"
    ) -> tuple[str, str] | None:
        """The failing field's path (under `field`) and the reason, or None."""
        if not self._rules:
            return None
        for validator in self._validators(exchange, routing_key):
            try:
                validator(payload)
            except fastjsonschema.JsonSchemaValueException as exc:
                path = ".".join([field, *(str(part) for part in exc.path[1:])])
                message = exc.message.removeprefix(exc.name or "").strip() or exc.message
                return path, message
        return None

    def applies(self, exchange: str, routing_key: str) -> bool:
        return bool(self._rules) and bool(self._validators(exchange, routing_key))

    def _validators(self, exchange: str, routing_key: str) -> list[Validator]:
        key = (exchange, routing_key)
        found = self._found.get(key)
        if found is None:
            found = [
                validator
                for rule_exchange, pattern, validator in self._rules
                if rule_exchange == exchange and fnmatchcase(routing_key, pattern)
            ]
            if len(self._found) >= _CACHE_LIMIT:
                self._found.clear()
            self._found[key] = found
        return found
