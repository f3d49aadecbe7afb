"""The consumer process: build the resources, run one worker per queue, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from consumers.settings import ConsumerSettings
from consumers.store import Store, open_store
from consumers.worker import QueueWorker
from hareway import broker
from hareway.topology import declare_topology, load_topology

log = logging.getLogger(__name__)


async def run(settings: ConsumerSettings, queues: Sequence[str]) -> None:
    """Consume `queues` until SIGTERM or SIGINT, then drain and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    topology = await asyncio.to_thread(load_topology, settings.topology_file)
    connection = await broker.connect(settings.rabbitmq_url, "consumer")
    store: Store | None = None
    workers: list[QueueWorker] = []
    try:
        await declare_topology(connection, topology)
        store = await open_store(settings.database_url)
        for queue in queues:
            # A channel per queue: its own QoS window and its own delivery tags to ack.
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=settings.prefetch)
            worker = QueueWorker(channel, queue, store, settings)
            await worker.start()
            workers.append(worker)
        log.info("consumer ready: %s", ", ".join(queues))
        await stop.wait()
        log.info("draining")
        await asyncio.gather(*(worker.stop() for worker in workers))
    finally:
        await connection.close()
        if store is not None:
            await store.close()
