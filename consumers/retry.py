"""Sending a failed message down its queue's retry ladder, or to its dead-letter queue.

The message goes to the queue's own retry exchange with the attempt count and last error
in headers, and is acknowledged only after the broker confirmed that publish: a crash in
between delivers it again, never loses it.
"""

from __future__ import annotations

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from consumers.decode import Decoded
from consumers.errors import RepublishFailed, Unrepublishable
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
    PERSISTENT,
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
        outgoing = retry_properties(decoded, message, error)
        exchange = retry_exchange_name(self._queue)
        try:
            channel = await self._channel.get_underlay_channel()
            _fit_frame(outgoing, len(message.body), channel.connection.connection_tune.frame_max)
            confirmation = await channel.basic_publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=outgoing,
                mandatory=True,
            )
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise RepublishFailed(
                f"could not send {record.message_id!r} to {exchange!r} ({routing_key}): {exc!r}"
            ) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            # What the codec cannot write back: it never will, so no requeue either.
            raise Unrepublishable(
                f"could not encode {record.message_id!r} for {exchange!r}: {exc}"
            ) from exc
        if not isinstance(confirmation, spec.Basic.Ack):
            raise RepublishFailed(
                f"the broker did not take {record.message_id!r} on {exchange!r}: {confirmation!r}"
            )

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()


def retry_properties(
    decoded: Decoded, message: DeliveredMessage, error: str
) -> spec.Basic.Properties:
    """The properties a failed message goes down the ladder with: its own, its attempt
    count and last error, and the route it first came by (it comes back by another)."""
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
    # The properties as they came, values that did not decode included (the codec writes
    # those back byte for byte); not `user_id`, which the broker checks against this
    # connection's user, nor `expiration`, which would drop it on the ladder.
    return spec.Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        # The id the store knows it by, even for a message published without one.
        message_id=record.message_id,
        timestamp=properties.timestamp,
        message_type=properties.message_type,
        app_id=properties.app_id,
    )


def _fit_frame(properties: spec.Basic.Properties, body_size: int, frame_max: int) -> None:
    """Make the content header fit one frame, shortening the last error if it must.

    A header frame over `frame_max` makes the broker close the whole connection, and
    with it every queue this process consumes: a foreign message whose headers nearly
    fill a frame must not do that once hareway's own headers are added.
    """
    headers = properties.headers or {}
    for keep in (_MAX_ERROR_CHARS, 100, 0):
        if keep:
            headers[LAST_ERROR_HEADER] = str(headers.get(LAST_ERROR_HEADER, ""))[:keep]
        else:
            headers.pop(LAST_ERROR_HEADER, None)
        size = len(ContentHeader(body_size=body_size, properties=properties).marshal())
        # The frame's own type, channel and size (7 bytes) and end byte come on top.
        if size + 8 <= frame_max:
            return
    raise Unrepublishable(f"its headers alone fill a frame ({size} of {frame_max} bytes)")
