"""Turning an AMQP delivery into the record the store keeps."""

from __future__ import annotations

from datetime import UTC

from aio_pika.abc import AbstractIncomingMessage

from consumers.store.records import DeliveryRecord
from hareway.wire import attempts_so_far, fallback_message_id, jsonable


def to_record(queue: str, message: AbstractIncomingMessage) -> DeliveryRecord:
    exchange = message.exchange or ""
    routing_key = message.routing_key or ""
    body = message.body
    headers = dict(message.headers or {})
    published_at = message.timestamp
    if published_at is not None and published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=UTC)
    return DeliveryRecord(
        queue=queue,
        message_id=message.message_id or fallback_message_id(exchange, routing_key, body),
        exchange=exchange,
        routing_key=routing_key,
        headers=jsonable(headers),  # type: ignore[arg-type]
        content_type=message.content_type,
        body=body,
        attempts=attempts_so_far(headers) + 1,
        published_at=published_at,
    )
