"""What a pushed message looks like over HTTP (docs/push.md has the table).

The body goes byte for byte with its content type (and content encoding: a gzip body stays
gzip). The route, the AMQP properties and the attempt are `hareway-*` headers; the message's
own header table travels as one `hareway-headers` JSON object, since AMQP header names
and values need not be HTTP field names or values. A CloudEvent the gateway took in binary
mode (`cloudEvents:*` AMQP headers) goes out in binary mode again, `ce-*` headers; one in
structured mode is its body with `application/cloudevents+json`, structured mode already.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from pamqp import commands as spec

from hareway.store.records import DeliveryRecord

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
# The AMQP binding's prefixes for CloudEvents attributes (1.0.2 uses the first).
_CE_PREFIXES: Final = ("cloudEvents:", "cloudEvents_")
# W3C trace context travels as itself, so the target's spans join the publisher's trace.
_TRACE_HEADERS: Final = ("traceparent", "tracestate")
# Percent-encoding as the CloudEvents HTTP binding asks of `ce-*` values (everything but
# printable ASCII, and space, `"` and `%`), applied to every single-value header: a
# receiver undoes all of them the same way.
_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def field_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    return quote(text, safe=_SAFE)


def webhook_id(record: DeliveryRecord) -> str:
    """The message id as it goes in `webhook-id` (and into the signed bytes)."""
    return field_value(record.message_id)


def push_headers(
    record: DeliveryRecord, properties: spec.Basic.Properties, extra: Mapping[str, str]
) -> dict[str, str]:
    """Every header of the request but the signature's."""
    headers: dict[str, str] = dict(extra)
    content_type = record.content_type or DEFAULT_CONTENT_TYPE
    # As it is when it can be a field value (spaces and quotes belong in one).
    printable = content_type.isascii() and content_type.isprintable()
    headers["content-type"] = content_type if printable else field_value(content_type)
    if record.content_encoding:
        headers["content-encoding"] = field_value(record.content_encoding)
    headers["hareway-queue"] = field_value(record.queue)
    headers["hareway-exchange"] = field_value(record.exchange)
    headers["hareway-routing-key"] = field_value(record.routing_key)
    # 1 on the first delivery; the same `webhook-id` on every one.
    headers["hareway-attempt"] = str(record.attempts)
    if record.published_at is not None:
        headers["hareway-published-at"] = record.published_at.isoformat()
    for name, value in (
        ("hareway-correlation-id", properties.correlation_id),
        ("hareway-reply-to", properties.reply_to),
        ("hareway-type", properties.message_type),
        ("hareway-app-id", properties.app_id),
        ("hareway-priority", properties.priority),
    ):
        # Only text and numbers: a value the codec could not decode is no header at all.
        if isinstance(value, str | int) and not isinstance(value, bool):
            headers[name] = field_value(value)
    table: dict[str, Any] = {}
    for name, value in record.headers.items():
        attribute = _ce_attribute(name)
        if attribute is not None:
            headers[f"ce-{attribute}"] = field_value(value)
        elif name in _TRACE_HEADERS and isinstance(value, str):
            headers[name] = field_value(value)
        else:
            table[name] = value
    if table:
        # ensure_ascii: JSON escapes every other character, so the value is a valid field.
        headers["hareway-headers"] = json.dumps(
            table, ensure_ascii=True, separators=(",", ":"), default=str
        )
    return headers


def _ce_attribute(name: str) -> str | None:
    for prefix in _CE_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            attribute = name[len(prefix) :].lower()
            # Attribute names are [a-z0-9]; anything else is no CloudEvents attribute.
            return attribute if attribute.isascii() and attribute.isalnum() else None
    return None
