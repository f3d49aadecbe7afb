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

import orjson
from cloudevents.core.bindings import http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent

from gateway.errors import InvalidCloudEvent

# AMQP short strings (message_id) hold at most 255 bytes.
_MAX_ID_BYTES: Final = 255

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
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
    # The event's data as JSON, when it is JSON (for the route's JSON Schema).
    json_data: Any = None
    has_json_data: bool = False

    @property
    def message_id(self) -> str:
        """`source#id`: unique per the spec. Over AMQP's 255 bytes, a stable digest of it."""
        joined = f"{self.source}#{self.id}"
        if len(joined.encode()) <= _MAX_ID_BYTES:
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
    json_data: Any = None
    has_json_data = False
    if media_type is not None and _is_json(media_type):
        try:
            json_data, has_json_data = orjson.loads(body), True
        except orjson.JSONDecodeError:
            raise InvalidCloudEvent("the body is declared JSON but is not valid JSON") from None
    return Event(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        headers={AMQP_PREFIX + name: value for name, value in attributes.items()},
        json_data=json_data,
        has_json_data=has_json_data,
    )


def from_structured(body: bytes) -> Event:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidCloudEvent(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidCloudEvent("a structured-mode CloudEvent is a JSON object")
    try:
        event = http.from_structured_event(http.HTTPMessage(headers={}, body=body))
    except _LIBRARY_ERRORS as exc:
        raise InvalidCloudEvent(f"structured-mode CloudEvent: {exc}") from None
    content_type = document.get("datacontenttype")
    has_json_data = "data" in document and (content_type is None or _is_json(str(content_type)))
    return Event(
        id=event.get_id(),
        source=event.get_source(),
        type=event.get_type(),
        headers={},
        json_data=document.get("data"),
        has_json_data=has_json_data,
    )


def _is_json(media_type: str) -> bool:
    media_type = media_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")
