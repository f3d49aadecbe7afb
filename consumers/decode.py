"""Turning an AMQP delivery into the record the store keeps and the payload handlers get.

Any AMQP publisher may send what the gateway would refuse. Decoding never raises: a
message that can never succeed (properties that did not decode, a body that claims JSON
and is not, a body its content encoding cannot undo, a payload failing its route's
schema) becomes a record marked `poison`, which goes to the dead letters with the reason.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from hareway.amqp.codec import MARKERS, describe
from hareway.schemas import SchemaRules
from hareway.store.records import DeliveryRecord
from hareway.wire import (
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    attempts_so_far,
    fallback_message_id,
    header_text,
    is_json_content_type,
    is_transport_header,
    jsonable,
    short_string_problem,
)

# A body its content encoding inflates past this is refused, not inflated: a small
# compressed message must not take a consumer's memory.
DEFAULT_MAX_DECODED_BYTES = 16 * 1024 * 1024

# The properties a foreign publisher's bytes may have left undecodable (see codec.py).
_CHECKED_PROPERTIES = (
    "message_id",
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_type",
    "user_id",
    "app_id",
    "timestamp",
)


@dataclass(frozen=True, slots=True)
class Decoded:
    record: DeliveryRecord
    # The JSON value of a JSON message, else None.
    payload: Any = None
    # Why this message can never succeed (it goes to the dead letters at once), else None.
    poison: str | None = None


# A queue sees few distinct content types; parsing one costs more than looking it up.
_is_json = functools.lru_cache(maxsize=64)(is_json_content_type)


def decode(
    queue: str,
    message: DeliveredMessage,
    schemas: SchemaRules | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Decoded:
    record = to_record(queue, message)
    undecodable = _undecodable(message)
    if undecodable is not None:
        return Decoded(record, poison=f"undecodable AMQP {undecodable}")
    if not _is_json(record.content_type):
        return Decoded(record)
    try:
        body = decoded_body(record.body, record.content_encoding, max_decoded_bytes)
    except ValueError as exc:
        return Decoded(record, poison=f"undecodable: {exc}")
    if body is None:
        # An encoding hareway cannot undo: stored as it came; only a schema needs to read it.
        if schemas is not None and schemas.applies(record.exchange, record.routing_key):
            reason = f"content_encoding {record.content_encoding!r} hides it from its schema"
            return Decoded(record, poison=f"undecodable: {reason}")
        return Decoded(record)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Decoded(record, poison=f"undecodable: the body is not valid JSON ({exc})")
    if schemas is not None:
        violation = schemas.violation(
            record.exchange, record.routing_key, record.content_type, payload
        )
        if violation is not None:
            return Decoded(record, payload, poison=f"fails its schema: {violation}")
    return Decoded(record, payload)


def decoded_body(body: bytes, encoding: str | None, limit: int) -> bytes | None:
    """The body with its content encoding undone (gzip, deflate), or None for an
    encoding hareway does not know. Raises ValueError for a body that does not decode
    or decodes to more than `limit` bytes."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name in ("gzip", "x-gzip"):
        return _inflate(body, zlib.MAX_WBITS | 16, name, limit)
    if name == "deflate":
        # HTTP's deflate is zlib-wrapped; some senders mean the raw stream.
        try:
            return _inflate(body, zlib.MAX_WBITS, name, limit)
        except zlib.error:
            return _inflate(body, -zlib.MAX_WBITS, name, limit)
    return None


def _inflate(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        if wbits == zlib.MAX_WBITS:
            raise  # deflate: try the raw stream
        raise ValueError(f"content_encoding {name}: {exc}") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise ValueError(f"content_encoding {name}: inflates past {limit} bytes")
    if not inflater.eof:
        raise ValueError(f"content_encoding {name}: the stream is cut short")
    return inflated


def _undecodable(message: DeliveredMessage) -> str | None:
    """What of the delivery did not decode (see hareway.amqp.codec), or None."""
    for name in ("exchange", "routing_key"):
        value = getattr(message, name, None)
        if type(value) in MARKERS:
            return f"{name}: {describe(value)}"
    properties: spec.Basic.Properties = message.header.properties
    for name in _CHECKED_PROPERTIES:
        value = getattr(properties, name, None)
        if type(value) in MARKERS:
            return f"property {name}: {describe(value)}"
    if properties.headers:
        problem = describe(properties.headers)
        if problem is not None:
            return f"headers: {problem}"
    return None


def _route_header(headers: dict[str, Any], name: str) -> str | None:
    """hareway's header naming the first route, if it could be one: any publisher can set
    it, and a name no exchange or routing key can have would only break the record."""
    value = header_text(headers, name)
    return value if value is not None and short_string_problem(value) is None else None


def to_record(queue: str, message: DeliveredMessage) -> DeliveryRecord:
    properties = message.header.properties
    raw_headers = properties.headers
    headers: dict[str, Any]
    if raw_headers:
        # A retried message comes back through the default exchange; its first route
        # travels in hareway's headers.
        exchange = _route_header(raw_headers, ORIGINAL_EXCHANGE_HEADER) or message.exchange or ""
        routing_key = (
            _route_header(raw_headers, ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or ""
        )
        headers = jsonable(  # type: ignore[assignment]
            {name: value for name, value in raw_headers.items() if not is_transport_header(name)}
        )
        attempts = attempts_so_far(raw_headers) + 1
    else:
        # Most first deliveries carry no headers: nothing to filter, convert or count.
        exchange = message.exchange or ""
        routing_key = message.routing_key or ""
        headers = {}
        attempts = 1
    body = message.body
    published_at = properties.timestamp
    if not isinstance(published_at, datetime):
        published_at = None  # none sent, or no time a datetime can hold
    elif published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=UTC)
    return DeliveryRecord(
        queue=queue,
        message_id=properties.message_id or fallback_message_id(exchange, routing_key, body),
        exchange=exchange,
        routing_key=routing_key,
        headers=headers,
        content_type=properties.content_type,
        body=body,
        attempts=attempts,
        published_at=published_at,
        content_encoding=properties.content_encoding,
    )
