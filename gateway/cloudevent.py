"""CloudEvents 1.0 over HTTP in, per the AMQP protocol binding out.

Binary mode (`ce-*` headers): the body is published byte for byte with its content type,
and each attribute becomes an AMQP header `cloudEvents:<name>` (datacontenttype is the
content-type property instead). Structured mode (`application/cloudevents+json`): the
event document is published as it came. The `cloudevents` library validates both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

import pydantic_core
from cloudevents.core.bindings import http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent

from gateway.envelope import check_numbers
from gateway.errors import InvalidCloudEvent, ValidationFailed
from hareway.wire import (
    CLOUDEVENT_CONTENT_TYPE,
    MAX_HEADER_NAME_BYTES,
    MAX_SHORT_STRING_BYTES,
    control_character_problem,
    is_json_content_type,
    schema_subjects,
    short_string_problem,
)

STRUCTURED_CONTENT_TYPE: Final = CLOUDEVENT_CONTENT_TYPE
HTTP_PREFIX: Final = "ce-"
# The released AMQP binding (1.0.2) names application properties `cloudEvents:<attribute>`.
AMQP_PREFIX: Final = "cloudEvents:"

_LIBRARY_ERRORS = (BaseCloudEventException, ValueError, TypeError, AttributeError)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    source: str
    type: str
    headers: dict[str, Any]
    # What the route's JSON Schema applies to: (field, value), the event's data when JSON.
    schema_subjects: tuple[tuple[str, Any], ...] = ()

    @property
    def message_id(self) -> str:
        """`source#id`: unique per the spec. Over AMQP's 255 bytes, a stable digest of it."""
        joined = f"{self.source}#{self.id}"
        if len(joined.encode()) <= MAX_SHORT_STRING_BYTES:
            return joined
        return "ce-sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def is_binary(headers: Mapping[str, str]) -> bool:
    return "ce-specversion" in headers


def from_binary(headers: Mapping[str, str], body: bytes, media_type: str | None) -> Event:
    attributes = {
        name[len(HTTP_PREFIX) :]: unquote(value)
        for name, value in headers.items()
        if name.startswith(HTTP_PREFIX)
    }
    for name, value in attributes.items():
        # Each becomes an AMQP header, `type` also the type property and routing key.
        _check_attribute(HTTP_PREFIX + name, value)
        _check_header_name(HTTP_PREFIX + name, AMQP_PREFIX + name)
    checked: dict[str, Any] = dict(attributes)
    if "time" in checked:
        try:
            checked["time"] = datetime.fromisoformat(checked["time"])
        except ValueError:
            raise InvalidCloudEvent(f"ce-time {checked['time']!r} is not RFC 3339") from None
    try:
        CloudEvent(attributes=checked, data=None)
    except _LIBRARY_ERRORS as exc:
        raise InvalidCloudEvent(f"binary-mode CloudEvent: {exc}") from None
    subjects: tuple[tuple[str, Any], ...] = ()
    if media_type is not None and is_json_content_type(media_type):
        data = _json(body, "the body is declared JSON")
        check_numbers(data, "data")
        # The body is the event's data.
        subjects = tuple(
            (_field("data", path), value) for path, value in schema_subjects(media_type, data)
        )
    return Event(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        headers={AMQP_PREFIX + name: value for name, value in attributes.items()},
        schema_subjects=subjects,
    )


def from_structured(body: bytes) -> Event:
    document = _json(body, "the body")
    if not isinstance(document, dict):
        raise InvalidCloudEvent("a structured-mode CloudEvent is a JSON object")
    # The document is published as it came: every number in it, not only in data.
    check_numbers(document, "event")
    try:
        event = http.from_structured_event(http.HTTPMessage(headers={}, body=body))
    except _LIBRARY_ERRORS as exc:
        raise InvalidCloudEvent(f"structured-mode CloudEvent: {exc}") from None
    for name in ("id", "source", "type"):
        # They become the message id, the type property and the routing key.
        _check_attribute(name, str(document.get(name, "")))
    return Event(
        id=event.get_id(),
        source=event.get_source(),
        type=event.get_type(),
        headers={},
        schema_subjects=tuple(schema_subjects(CLOUDEVENT_CONTENT_TYPE, document)),
    )


def _check_attribute(field: str, value: str) -> None:
    """CloudEvents strings hold no control characters; NUL would also break a store."""
    problem = control_character_problem(value)
    if problem is not None:
        raise ValidationFailed(
            f"{field}: {problem}",
            errors=[{"field": field, "message": problem, "type": "control_character"}],
        )


def _check_header_name(field: str, header: str) -> None:
    problem = short_string_problem(header, MAX_HEADER_NAME_BYTES)
    if problem is not None:
        raise ValidationFailed(
            f"{field}: its AMQP header name {header!r}: {problem}",
            errors=[{"field": field, "message": problem, "type": "header_name"}],
        )


def _json(body: bytes, what: str) -> Any:
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidCloudEvent(f"{what} is not valid JSON: {exc}") from None


def _field(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if path else prefix
