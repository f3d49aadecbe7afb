"""Removing what a test declared, retry ladders included, so the shared broker stays clean."""

from __future__ import annotations

from aio_pika.abc import AbstractConnection

from hareway.topology import Topology


async def remove_topology(connection: AbstractConnection, topology: Topology) -> None:
    expanded = topology.expanded()
    channel = await connection.channel()
    try:
        for queue in expanded.queues:
            await channel.queue_delete(queue.name)
        for exchange in expanded.exchanges:
            await channel.exchange_delete(exchange.name)
    finally:
        await channel.close()
