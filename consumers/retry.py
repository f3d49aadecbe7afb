"""Sending a failed message down its queue's retry ladder, or to its dead-letter queue.

The message goes to the queue's own retry exchange with the attempt count and last error
in headers, and is acknowledged only after the broker confirmed that publish: a crash in
between delivers it again, never loses it.
"""

from __future__ import annotations

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from consumers.decode import Decoded
from consumers.errors import RepublishFailed
from hareway.topology import (
    DEAD_LETTER_KEY,
    RetrySpec,
    delay_routing_key,
    retry_exchange_name,
)
from hareway.wire import (
    ATTEMPTS_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    is_transport_header,
)

# Enough to tell what went wrong, small enough for an AMQP header table.
_MAX_ERROR_CHARS = 1000


class Republisher:
    def __init__(self, channel: AbstractChannel, queue: str, retry: RetrySpec | None) -> None:
        self._channel = channel
        self._queue = queue
        self.retry = retry

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, queue: str, retry: RetrySpec | None
    ) -> Republisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, queue, retry)

    def delay_ms(self, attempts: int) -> int | None:
        """How long to wait before the next attempt, or None: dead-letter the message."""
        return None if self.retry is None else self.retry.delay_before_next(attempts)

    async def to_retry(
        self, decoded: Decoded, message: DeliveredMessage, error: str, delay_ms: int
    ) -> None:
        await self._publish(decoded, message, error, delay_routing_key(delay_ms))

    async def to_dead_letters(
        self, decoded: Decoded, message: DeliveredMessage, error: str
    ) -> None:
        # Without a ladder there is no dead-letter queue: the stored row is the dead letter.
        if self.retry is not None:
            await self._publish(decoded, message, error, DEAD_LETTER_KEY)

    async def _publish(
        self, decoded: Decoded, message: DeliveredMessage, error: str, routing_key: str
    ) -> None:
        record = decoded.record
        properties = message.header.properties
        headers = {
            name: value
            for name, value in (properties.headers or {}).items()
            if not is_transport_header(name)
        }
        headers |= {
            ATTEMPTS_HEADER: record.attempts,
            LAST_ERROR_HEADER: error[:_MAX_ERROR_CHARS],
            ORIGINAL_EXCHANGE_HEADER: record.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: record.routing_key,
        }
        outgoing = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=properties.priority,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            # The id the store knows it by, even for a message published without one.
            message_id=record.message_id,
            timestamp=properties.timestamp,
            type=properties.message_type,
            app_id=properties.app_id,
        )
        try:
            exchange = await self._channel.get_exchange(
                retry_exchange_name(self._queue), ensure=False
            )
            await exchange.publish(outgoing, routing_key=routing_key, mandatory=True)
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError) as exc:
            raise RepublishFailed(
                f"could not send {record.message_id!r} to {retry_exchange_name(self._queue)!r}"
                f" ({routing_key}): {exc!r}"
            ) from exc

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()
