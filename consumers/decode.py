"""Turning an AMQP delivery into the record the store keeps and the payload handlers get."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from aiormq.abc import DeliveredMessage

from consumers.store.records import DeliveryRecord
from hareway.schemas import SchemaRules
from hareway.wire import (
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    attempts_so_far,
    fallback_message_id,
    header_text,
    is_json_content_type,
    is_transport_header,
    jsonable,
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


def decode(queue: str, message: DeliveredMessage, schemas: SchemaRules | None = None) -> Decoded:
    record = to_record(queue, message)
    if not _is_json(record.content_type):
        return Decoded(record)
    try:
        payload = orjson.loads(record.body)
    except orjson.JSONDecodeError as exc:
        return Decoded(record, poison=f"undecodable: the body is not valid JSON ({exc})")
    if schemas is not None:
        violation = schemas.violation(record.exchange, record.routing_key, payload)
        if violation is not None:
            return Decoded(record, payload, poison=f"fails its schema: {violation}")
    return Decoded(record, payload)


def to_record(queue: str, message: DeliveredMessage) -> DeliveryRecord:
    properties = message.header.properties
    raw_headers = properties.headers
    headers: dict[str, Any]
    if raw_headers:
        # A retried message comes back through the default exchange; its first route
        # travels in hareway's headers.
        exchange = header_text(raw_headers, ORIGINAL_EXCHANGE_HEADER) or message.exchange or ""
        routing_key = (
            header_text(raw_headers, ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or ""
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
    if published_at is not None and published_at.tzinfo is None:
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
    )
