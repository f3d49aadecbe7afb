"""Talking to the real broker from a test: publish fast, and read a queue's depth."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractConnection


async def publish_many(
    connection: AbstractConnection,
    exchange: str,
    routing_key: str,
    count: int,
    *,
    id_prefix: str = "m",
    in_flight: int = 200,
) -> list[str]:
    """Publish `count` persistent JSON messages with confirms; returns their message ids."""
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange)
    ids = [f"{id_prefix}-{index}" for index in range(count)]
    for start in range(0, count, in_flight):
        await asyncio.gather(
            *(
                target.publish(
                    aio_pika.Message(
                        b'{"n": %d}' % index,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=ids[index],
                    ),
                    routing_key=routing_key,
                    mandatory=True,
                )
                for index in range(start, min(start + in_flight, count))
            )
        )
    await channel.close()
    return ids


async def ready_count(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in the queue (not counting ones a consumer holds unacked)."""
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    count = declared.declaration_result.message_count
    assert count is not None
    return count
