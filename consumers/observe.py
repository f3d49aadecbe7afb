"""What an operator sees of a running consumer beside `/metrics`: queue depths sampled from
the broker (the lag), and a summary line per interval.

    consumer summary  queue=orders.persist stored_per_s=812.4 retried=3 dead_lettered=0 lag=17

The depth is a passive declare per queue (and its `<queue>.dlq`) on a channel of its own,
every `QUEUE_SAMPLE_S`: the broker's count of messages ready, not yet delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from consumers.metrics import ConsumerMetrics
from hareway.logs import get_logger
from hareway.topology import Topology, dead_letter_queue_name

log = logging.getLogger(__name__)
summary_log = get_logger("consumers.summary")


async def sample_depths(
    connection: AbstractRobustConnection,
    queues: Sequence[str],
    topology: Topology,
    metrics: ConsumerMetrics,
    every_s: float,
) -> None:
    """Until cancelled: each queue's ready count (and its dead-letter queue's) into gauges."""
    channel: AbstractChannel | None = None
    while True:
        for queue in queues:
            spec = topology.queue(queue)
            targets = [(queue, metrics.queue_depth)]
            if spec is not None and spec.retry is not None:
                targets.append((dead_letter_queue_name(queue), metrics.dead_letter_depth))
            for name, gauge in targets:
                try:
                    if channel is None or channel.is_closed:
                        channel = await connection.channel()
                    declared = await channel.declare_queue(name, passive=True)
                except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                    # Gone, or the broker is away: the channel may be closed; next round.
                    log.debug("cannot sample the depth of %s: %r", name, exc)
                    continue
                count = declared.declaration_result.message_count
                if count is not None:
                    gauge.labels(queue).set(count)
        await asyncio.sleep(every_s)
        if channel is not None and connection.is_closed:
            channel = None


async def summarize(queues: Sequence[str], metrics: ConsumerMetrics, every_s: float) -> None:
    """Until cancelled: one summary line per queue every `every_s` seconds."""
    names = {
        "stored": "hareway_consumer_stored_messages_total",
        "retried": "hareway_consumer_retried_messages_total",
        "dead_lettered": "hareway_consumer_dead_lettered_messages_total",
    }

    def sample(queue: str) -> dict[str, float]:
        return {key: metrics.value(name, queue) for key, name in names.items()}

    last = {queue: sample(queue) for queue in queues}
    since = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        now = time.monotonic()
        elapsed = max(now - since, 1e-9)
        since = now
        for queue in queues:
            current = sample(queue)
            delta = {key: current[key] - last[queue][key] for key in names}
            last[queue] = current
            summary_log.info(
                "consumer summary",
                queue=queue,
                interval_s=round(elapsed, 1),
                stored_per_s=round(delta["stored"] / elapsed, 1),
                retried=int(delta["retried"]),
                dead_lettered=int(delta["dead_lettered"]),
                lag=int(metrics.value("hareway_consumer_queue_depth", queue)),
                store_up=bool(metrics.value("hareway_consumer_store_up", queue)),
            )


async def cancel(*tasks: asyncio.Task[None] | None) -> None:
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
