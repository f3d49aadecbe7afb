"""From an accepted request to the `Outgoing` message: the three body forms of one path.

- `application/json` (or no content type): the hareway envelope;
- `application/cloudevents+json`: a structured-mode CloudEvent;
- any content type with `ce-specversion`: a binary-mode CloudEvent, body byte for byte.
Anything else is refused with 415 before the body is read.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway import cloudevent
from gateway.envelope import PublishRequest, check_header_size, check_routing_key
from gateway.errors import ExchangeNotFound, UnsupportedMediaType, ValidationFailed
from gateway.publisher import Outgoing
from gateway.schemas import Schemas
from hareway.wire import JSON_CONTENT_TYPE, new_message_id

MAX_IDEMPOTENCY_KEY_CHARS = 255
# The names the broker accepts (pamqp refuses others before they are sent).
_EXCHANGE_NAME = re.compile(r"[a-zA-Z0-9_.:-]{1,127}")


class Form(enum.Enum):
    ENVELOPE = "envelope"
    STRUCTURED = "structured"
    BINARY = "binary"


def media_type(headers: Mapping[str, str]) -> str | None:
    content_type = headers.get("content-type")
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def check_exchange(exchange: str) -> None:
    """A name no exchange can have is a 404 before anything else, not a client crash."""
    if not _EXCHANGE_NAME.fullmatch(exchange):
        raise ExchangeNotFound(
            f"no exchange {exchange!r}: names are 1-127 of letters, digits, - _ . :"
        )


def body_form(headers: Mapping[str, str]) -> Form:
    if cloudevent.is_binary(headers):
        return Form.BINARY
    kind = media_type(headers)
    if kind is None or kind == JSON_CONTENT_TYPE:
        return Form.ENVELOPE
    if kind == cloudevent.STRUCTURED_CONTENT_TYPE:
        return Form.STRUCTURED
    raise UnsupportedMediaType(
        f"content type {kind!r} is not accepted: send application/json (the envelope), "
        "application/cloudevents+json, or a binary-mode CloudEvent (ce-* headers)"
    )


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValidationFailed(
            f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 characters", "type": ""}],
        )
    return key


@dataclass(frozen=True, slots=True)
class Context:
    """What every message of one request shares."""

    exchange: str
    app_id: str
    schemas: Schemas
    max_header_bytes: int


def from_envelope(
    envelope: PublishRequest, context: Context, message_id: str | None, field: str = "payload"
) -> Outgoing:
    context.schemas.check(context.exchange, envelope.routing_key, envelope.payload, field)
    check_header_size(envelope.headers, context.max_header_bytes)
    return Outgoing(
        exchange=context.exchange,
        routing_key=envelope.routing_key,
        body=envelope.payload_bytes(),
        message_id=envelope.message_id or message_id or new_message_id(),
        content_type=JSON_CONTENT_TYPE,
        headers=dict(envelope.headers),
        correlation_id=envelope.correlation_id,
        reply_to=envelope.reply_to,
        priority=envelope.priority,
        expiration_ms=envelope.expiration_ms,
        type=envelope.type,
        timestamp=envelope.timestamp,
        app_id=context.app_id,
    )


def from_cloudevent(
    form: Form,
    headers: Mapping[str, str],
    body: bytes,
    routing_key: str | None,
    context: Context,
) -> Outgoing:
    if form is Form.BINARY:
        event = cloudevent.from_binary(headers, body, media_type(headers))
        content_type = headers.get("content-type")
    else:
        event = cloudevent.from_structured(body)
        content_type = cloudevent.STRUCTURED_CONTENT_TYPE
    key = routing_key or event.type
    check_routing_key(key, "routing_key")
    if event.has_json_data:
        context.schemas.check(context.exchange, key, event.json_data, "data")
    check_header_size(event.headers, context.max_header_bytes, "ce-* headers")
    return Outgoing(
        exchange=context.exchange,
        routing_key=key,
        body=body,
        message_id=event.message_id,
        content_type=content_type,
        headers=event.headers,
        type=event.type,
        app_id=context.app_id,
    )
