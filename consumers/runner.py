"""The consumer process: build the resources, run one worker per queue, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from aio_pika.abc import AbstractRobustConnection

from consumers.app import Consumer
from consumers.batch import BatchProcessor
from consumers.health import serve_health
from consumers.retry import Republisher
from consumers.settings import ConsumerSettings
from consumers.store import Store, open_store
from consumers.worker import QueueWorker
from hareway import broker
from hareway.schemas import SchemaRules
from hareway.topology import Topology, declare_topology, load_topology

log = logging.getLogger(__name__)


async def run(
    settings: ConsumerSettings,
    queues: Sequence[str],
    app: Consumer | None = None,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Consume `queues` until SIGTERM or SIGINT (or until `stop` is set), then drain.

    `stop` and `started` let a host that owns the signals (a test, an embedding service)
    run the consumer inside its own event loop.
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    topology = await asyncio.to_thread(load_topology, settings.topology_file)
    connection = await broker.connect(settings.rabbitmq_url, "consumer")
    store: Store | None = None
    workers: list[QueueWorker] = []
    health: asyncio.Server | None = None
    try:
        await declare_topology(connection, topology)
        store = await open_store(settings.database_url)
        schemas = SchemaRules(topology.schemas)
        for queue in queues:
            worker = await _worker(connection, queue, store, topology, app, settings, schemas)
            await worker.start()
            workers.append(worker)
        if settings.health_port is not None:

            def ready() -> bool:
                up = not connection.is_closed and connection.connected.is_set()
                return up and all(worker.ready for worker in workers)

            health = await serve_health(settings.health_host, settings.health_port, ready)
            log.info("health probes on http://%s:%d", settings.health_host, settings.health_port)
        log.info("consumer ready: %s", ", ".join(queues))
        if started is not None:
            started.set()
        await stop.wait()
        log.info("draining")
        await asyncio.gather(*(worker.stop() for worker in workers))
    finally:
        if health is not None:
            health.close()
        await connection.close()
        if store is not None:
            await store.close()


async def _worker(
    connection: AbstractRobustConnection,
    queue: str,
    store: Store,
    topology: Topology,
    app: Consumer | None,
    settings: ConsumerSettings,
    schemas: SchemaRules,
) -> QueueWorker:
    # A channel per queue: its own QoS window and its own delivery tags to ack.
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=settings.prefetch)
    spec = topology.queue(queue)
    republisher = await Republisher.open(connection, queue, spec.retry if spec else None)
    handler = app.handlers.get(queue) if app is not None else None
    processor = BatchProcessor(store, queue, handler, republisher.delay_ms)
    return QueueWorker(channel, queue, processor, republisher, settings, schemas)
