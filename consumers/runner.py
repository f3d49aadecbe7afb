"""The consumer process: build the resources, run one worker per queue, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from aio_pika.abc import AbstractRobustConnection

from consumers.batch import BatchProcessor
from consumers.handlers import Handlers
from consumers.health import serve_health
from consumers.metrics import ConsumerMetrics
from consumers.observe import cancel, sample_depths, summarize
from consumers.push import Pusher
from consumers.retry import Republisher
from consumers.settings import ConsumerSettings
from consumers.worker import QueueWorker
from hareway import amqp as amqp_internals
from hareway import broker
from hareway.schemas import SchemaRules
from hareway.store import Store, open_store
from hareway.store.janitor import RETENTION, Janitor
from hareway.topology import Topology, declare_topology, load_topology
from hareway.tracing import Tracing

log = logging.getLogger(__name__)


async def run(
    settings: ConsumerSettings,
    queues: Sequence[str],
    app: Handlers | None = None,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Consume `queues` until SIGTERM or SIGINT (or until `stop` is set), then drain.

    `stop` and `started` let a host that owns the signals (a test, an embedding service)
    run the consumer inside its own event loop; `tracing` defaults to the environment's
    (hareway/tracing.py).
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    amqp_internals.prepare()
    topology = await asyncio.to_thread(load_topology, settings.topology_file)
    connection = await broker.connect(settings.rabbitmq_url, "consumer")
    store: Store | None = None
    workers: list[QueueWorker] = []
    health: asyncio.Server | None = None
    metrics = ConsumerMetrics()
    metrics.watch(connection)
    owns_tracing = tracing is None
    tracing = tracing or Tracing.from_environment("hareway-consumer")
    observers: list[asyncio.Task[None]] = []
    try:
        await declare_topology(connection, topology)
        store = await open_store(settings.database_url)
        schemas = SchemaRules(topology.schemas)
        for queue in queues:
            worker = await _worker(
                connection, queue, store, topology, app, settings, schemas, metrics, tracing
            )
            await worker.start()
            workers.append(worker)
            metrics.store_up.labels(queue).set_function(_store_ok(worker))
        observers.append(
            asyncio.create_task(
                sample_depths(connection, queues, topology, metrics, settings.queue_sample_s)
            )
        )
        # Retention, swept by one consumer of the deployment at a time.
        janitor = Janitor(
            store,
            topology,
            chores=RETENTION,
            every_s=settings.retention_sweep_s,
            swept=metrics.swept,
        )
        observers.append(asyncio.create_task(janitor.run()))
        if settings.summary_interval_s > 0:
            observers.append(
                asyncio.create_task(summarize(queues, metrics, settings.summary_interval_s))
            )
        if settings.health_port is not None:

            def ready() -> bool:
                up = not connection.is_closed and connection.connected.is_set()
                return up and all(worker.ready for worker in workers)

            health = await serve_health(
                settings.health_host, settings.health_port, ready, metrics.render
            )
            log.info("health probes on http://%s:%d", settings.health_host, settings.health_port)
        log.info("consumer ready: %s", ", ".join(queues))
        if started is not None:
            started.set()
        await stop.wait()
        log.info("draining")
        await asyncio.gather(*(worker.stop() for worker in workers))
    finally:
        await cancel(*observers)
        if health is not None:
            health.close()
        await connection.close()
        if store is not None:
            await store.close()
        if owns_tracing:
            tracing.shutdown()  # flushes the spans still buffered


def _store_ok(worker: QueueWorker) -> Callable[[], float]:
    return lambda: float(worker.store_ok)


async def _worker(
    connection: AbstractRobustConnection,
    queue: str,
    store: Store,
    topology: Topology,
    app: Handlers | None,
    settings: ConsumerSettings,
    schemas: SchemaRules,
    metrics: ConsumerMetrics,
    tracing: Tracing,
) -> QueueWorker:
    # A channel per queue: its own QoS window and its own delivery tags to ack.
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=settings.prefetch)
    spec = topology.queue(queue)
    republisher = await Republisher.open(connection, queue, spec.retry if spec else None)
    handler = app.handlers.get(queue) if app is not None else None
    processor = BatchProcessor(
        store,
        queue,
        handler,
        republisher.delay_ms,
        handler_seconds=metrics.handler_seconds.labels(queue),
        tracing=tracing,
    )
    subscription = topology.subscription(queue)
    pusher = None
    if subscription is not None:
        backoff = (settings.store_backoff_initial_s, settings.store_backoff_max_s)
        pusher = await Pusher.open(
            subscription, store, republisher.retry, metrics, backoff, tracing=tracing
        )
        log.info("pushing %s", subscription.describe())
    return QueueWorker(
        channel,
        queue,
        processor,
        republisher,
        settings,
        schemas,
        metrics,
        tracing=tracing,
        pusher=pusher,
    )
