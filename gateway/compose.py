"""From an accepted request to the `Outgoing` message: the three body forms of one path.

- `application/json` (or no content type): the hareway envelope;
- `application/cloudevents+json`: a structured-mode CloudEvent;
- any content type with `ce-specversion`: a binary-mode CloudEvent, body byte for byte.
Anything else is refused with 415 before the body is read.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway import cloudevent
from gateway.auth import reserved_routing_key
from gateway.envelope import (
    PublishRequest,
    check_header_size,
    check_routing_key,
    check_short_string,
)
from gateway.errors import ExchangeNotFound, UnsupportedMediaType, ValidationFailed
from gateway.publisher import Outgoing
from gateway.schemas import Schemas
from hareway.wire import JSON_CONTENT_TYPE, MAX_SHORT_STRING_BYTES, new_message_id

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


def check_route(exchange: str, routing_key: str, field: str) -> None:
    reason = reserved_routing_key(exchange, routing_key)
    if reason is not None:
        raise ValidationFailed(
            f"{field}: {reason}", errors=[{"field": field, "message": reason, "type": "reserved"}]
        )


def header_fields(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's header fields by (lower-case) name, the first of each, as starlette's
    `Headers.get` finds them: for several lookups per request, where `Headers` scans the
    list anew for each and pays an exception for every field that is absent."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


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
    if key is not None:
        # It may become the message id: the same rules as any AMQP short string.
        check_short_string(key, "Idempotency-Key")
    return key


@dataclass(frozen=True, slots=True)
class Context:
    """What every message of one request shares."""

    exchange: str
    app_id: str
    schemas: Schemas
    max_header_bytes: int
    # Whose Idempotency-Keys these are: None without API keys (one caller, one namespace).
    key_owner: str | None = None
    # Headers hareway adds to every message of the request: its request id, its trace
    # context (gateway/access.py). Callers cannot send these names themselves (`x-*` is
    # refused; `traceparent` is replaced).
    carried: Mapping[str, str] | None = None

    def keyed_message_id(self, key: str | None, suffix: str = "") -> str | None:
        """The message id an Idempotency-Key stands for, when the body names none.

        Keys are per API key, so two callers may pick the same one: with API keys the id
        is `<key name>:<key>`, or a digest of it when that is over AMQP's 255 bytes.
        """
        if key is None:
            return None
        message_id = (
            f"{key}{suffix}" if self.key_owner is None else f"{self.key_owner}:{key}{suffix}"
        )
        if len(message_id.encode()) <= MAX_SHORT_STRING_BYTES:
            return message_id
        return "idem-sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def from_envelope(
    envelope: PublishRequest, context: Context, message_id: str | None, prefix: str = ""
) -> Outgoing:
    """`message_id`: the id to use when the envelope names none (see `keyed_message_id`);
    `prefix` goes before the names of failing fields (`messages.3.` in a batch)."""
    check_route(context.exchange, envelope.routing_key, f"{prefix}routing_key")
    context.schemas.check(
        context.exchange, envelope.routing_key, envelope.payload, f"{prefix}payload"
    )
    check_header_size(envelope.headers, context.max_header_bytes)
    headers = dict(envelope.headers)
    if context.carried:
        headers.update(context.carried)
    return Outgoing(
        exchange=context.exchange,
        routing_key=envelope.routing_key,
        body=envelope.payload_bytes(),
        message_id=envelope.message_id or message_id or new_message_id(),
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
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
        if content_type is not None:
            check_short_string(content_type, "content-type")
    else:
        event = cloudevent.from_structured(body)
        content_type = cloudevent.STRUCTURED_CONTENT_TYPE
    # The event type is the AMQP type property, and the routing key unless one is given.
    check_short_string(event.type, "type")
    key = routing_key or event.type
    check_routing_key(key, "routing_key")
    check_route(context.exchange, key, "routing_key")
    for field, subject in event.schema_subjects:
        context.schemas.check(context.exchange, key, subject, field)
    check_header_size(event.headers, context.max_header_bytes, "ce-* headers")
    headers = event.headers
    if context.carried:
        headers = {**headers, **context.carried}
    return Outgoing(
        exchange=context.exchange,
        routing_key=key,
        body=body,
        message_id=event.message_id,
        content_type=content_type,
        headers=headers,
        type=event.type,
        app_id=context.app_id,
    )
