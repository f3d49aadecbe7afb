"""The references: what aio-pika and aiormq do with no HTTP in front, and a bare consume loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import NamedTuple

import aio_pika
import aiormq
from pamqp import commands as spec

BODY = b'{"order_id": 42, "amount": 99.5, "currency": "EUR", "customer": "c-1234567"}'


class Published(NamedTuple):
    """A bare publisher's rate, and the CPU this process spent per confirmed message."""

    rate: float
    cpu_us: float


async def _timed(lanes: Iterable[Awaitable[None]]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of running `lanes` together."""
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*lanes)
    return time.perf_counter() - started, time.process_time() - cpu_started


async def aio_pika_publisher(
    url: str, exchange: str, routing_key: str, duration: float, in_flight: int = 256
) -> Published:
    """msg/s of persistent, confirmed publishes with `in_flight` confirms outstanding, and
    the CPU per message (this process does nothing else meanwhile)."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange)
    confirmed = 0
    deadline = time.perf_counter() + duration

    async def lane() -> None:
        nonlocal confirmed
        while time.perf_counter() < deadline:
            await target.publish(
                aio_pika.Message(
                    BODY,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                mandatory=True,
            )
            confirmed += 1

    elapsed, cpu = await _timed(lane() for _ in range(in_flight))
    await connection.close()
    return Published(confirmed / elapsed, cpu / max(confirmed, 1) * 1e6)


async def aiormq_publisher(
    url: str, exchange: str, routing_key: str, duration: float, in_flight: int = 256
) -> Published:
    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    properties = spec.Basic.Properties(content_type="application/json", delivery_mode=2)
    confirmed = 0
    deadline = time.perf_counter() + duration

    async def lane() -> None:
        nonlocal confirmed
        while time.perf_counter() < deadline:
            await channel.basic_publish(
                BODY,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
            )
            confirmed += 1

    elapsed, cpu = await _timed(lane() for _ in range(in_flight))
    await connection.close()
    return Published(confirmed / elapsed, cpu / max(confirmed, 1) * 1e6)


async def fill(url: str, exchange: str, routing_key: str, count: int) -> None:
    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    properties = spec.Basic.Properties(content_type="application/json", delivery_mode=2)
    for start in range(0, count, 500):
        await asyncio.gather(
            *(
                channel.basic_publish(
                    BODY,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=spec.Basic.Properties(
                        content_type="application/json", delivery_mode=2, message_id=f"fill-{index}"
                    ),
                )
                for index in range(start, min(start + 500, count))
            )
        )
    del properties
    await connection.close()


async def consume_loop(
    url: str, queue: str, count: int, prefetch: int = 500, ack_every: int = 100
) -> float:
    """msg/s of a bare consume + ack(multiple=True) loop, first delivery to last ack."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    target = await channel.get_queue(queue)
    done = asyncio.Event()
    received = 0
    first = 0.0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received, first
        if received == 0:
            first = time.perf_counter()
        received += 1
        if received % ack_every == 0 or received == count:
            await message.ack(multiple=True)
        if received == count:
            done.set()

    await target.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - first
    await connection.close()
    return count / elapsed


async def aio_pika_latency(
    url: str, exchange: str, routing_key: str, duration: float, in_flight: int = 4
) -> tuple[float, float]:
    """p50 and p99 ms of publish-to-confirm of persistent messages with only `in_flight`
    outstanding: what the broker's confirm itself costs, the floor under any gateway's
    light-load latency. To an exchange whose queue is not durable the broker confirms with
    no disk write: how much of that floor is the disk."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange)
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def lane() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await target.publish(
                aio_pika.Message(
                    BODY,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                mandatory=True,
            )
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    await connection.close()
    latencies.sort()
    return (
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )
