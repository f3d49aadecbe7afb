"""The app factory. Every resource (connection, channels, store) is built in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI

from gateway import docs, problems
from gateway.access import Observer
from gateway.announcer import Announcer
from gateway.auth import Authenticator
from gateway.cors import Cors
from gateway.deps import PublishServices
from gateway.drain import Drain
from gateway.fastpath import Gateway
from gateway.idempotency import Idempotency
from gateway.metrics import MeteredPublisher, Metrics
from gateway.openapi import declare_security
from gateway.publisher import AmqpPublisher, Publisher
from gateway.queues import KnownQueues
from gateway.routes import (
    asyncapi,
    batch,
    dead_letters,
    health,
    problem_pages,
    publish,
    read,
    status,
    stream,
)
from gateway.schemas import Schemas
from gateway.settings import GatewaySettings
from hareway import __version__, broker, logs
from hareway import amqp as amqp_internals
from hareway.asyncapi import asyncapi_document
from hareway.heap import freeze_startup_heap
from hareway.store import Store, open_store
from hareway.store.commits import commit_feed
from hareway.store.janitor import KEYS, Janitor
from hareway.topology import Topology, declare_topology, load_topology
from hareway.tracing import Tracing

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    publisher: Publisher | None = None,
    store: Store | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The gateway app. `publisher` and `store`, when given, stand in for the broker and
    `DATABASE_URL` (tests: `gateway.testing.MemoryPublisher`, `hareway.store.MemoryStore`);
    the app then neither connects nor closes them. `tracing`: by default from the
    environment (hareway/tracing.py); tests pass their own."""
    if settings is None:
        # A `--workers` process: its own settings and, like the master, the one log format.
        settings = GatewaySettings()
        logs.configure("gateway", settings.log_level, settings.log_format)
    owns_tracing = tracing is None
    if tracing is None:
        tracing = Tracing.from_environment("hareway-gateway")
    observer = Observer(settings.access_log, tracing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        amqp_internals.prepare()
        topology = await asyncio.to_thread(load_topology, settings.topology_file)
        schemas = Schemas(topology.schemas)
        authenticator = Authenticator.from_settings(settings)
        metrics = Metrics()
        observer.answered = metrics.answered
        amqp = (
            await _open_publisher(settings, topology, metrics) if publisher is None else publisher
        )
        try:
            opened = await open_store(settings.database_url) if store is None else store
        except BaseException:
            if publisher is None:
                await amqp.close()
            raise
        metered = MeteredPublisher(amqp, metrics)
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.publisher = metered
        app.state.store = opened
        app.state.topology = topology
        app.state.asyncapi = orjson.dumps(
            asyncapi_document(topology, broker.vhost(settings.rabbitmq_url))
        )
        app.state.authenticator = authenticator
        app.state.known_queues = KnownQueues(
            topology,
            opened,
            metered,
            ttl_s=settings.queue_cache_ttl_s,
            missing_ttl_s=settings.queue_missing_ttl_s,
        )
        # One commit feed per process, fanned out to every long poll and stream.
        announcer = Announcer(commit_feed(opened, settings.commit_poll_s))
        announcer.start()
        app.state.announcer = announcer
        drain.on_stop[:] = [announcer.close]
        keys = Idempotency(
            opened,
            ttl_s=settings.idempotency_ttl_s,
            # A claim outlives its own request by a margin, never a gateway that died.
            pending_ttl_s=settings.publish_timeout_s * 2 + 10,
            wait_s=settings.publish_timeout_s + 1,
        )
        app.state.publish_services = PublishServices(
            metered, settings, schemas, keys, authenticator
        )
        # Paced, and by one gateway of the deployment at a time (hareway/store/janitor.py).
        janitor = Janitor(opened, topology, chores=KEYS, every_s=settings.idempotency_purge_s)
        purging = asyncio.create_task(janitor.run())
        if drain.take_signals():
            log.info("SIGTERM drains for %gs first (DRAIN_DELAY_S)", settings.drain_delay_s)
        log.info("gateway ready, publishing to %s", broker.redact(settings.rabbitmq_url))
        freeze_startup_heap()
        try:
            yield
        finally:
            purging.cancel()
            await announcer.stop()
            if publisher is None:
                await metered.close()
            if store is None:
                await opened.close()
            if owns_tracing:
                tracing.shutdown()  # flushes the spans still buffered

    drain = Drain(settings.drain_delay_s)
    app = Gateway(
        title="hareway",
        summary="An HTTP gateway for RabbitMQ: 2xx only once the broker confirmed",
        version=__version__,
        lifespan=lifespan,
        # Served from a pip package's files, not a CDN: gateway/docs.py.
        docs_url=None,
        redoc_url=None,
    )
    app.drain = drain
    app.state.drain = drain
    app.observer = observer
    if settings.cors_allow_origins:
        app.cors = Cors(app.routed, settings.cors_allow_origins)
    docs.install(app)
    problems.install(app, settings.retry_after_s)
    declare_security(app)
    app.include_router(publish.router)
    app.include_router(batch.router)
    app.include_router(read.router)
    app.include_router(status.router)
    app.include_router(stream.router)
    app.include_router(health.router)
    app.include_router(dead_letters.router)
    app.include_router(problem_pages.router)
    app.include_router(asyncapi.router)
    return app


async def _open_publisher(
    settings: GatewaySettings, topology: Topology, metrics: Metrics
) -> AmqpPublisher:
    connection = await broker.connect(settings.rabbitmq_url, "gateway")
    lookups: AbstractRobustConnection | None = None
    try:
        # Exchange lookups and first publishes, which the broker may refuse by closing
        # their channel, never share a connection with the publishes in flight.
        lookups = await broker.connect(settings.rabbitmq_url, "gateway-lookups")
        await declare_topology(connection, topology)
        metrics.watch(connection, "publish")
        metrics.watch(lookups, "lookups")
        return await AmqpPublisher.open(
            connection,
            lookups,
            channels=settings.publish_channels,
            timeout_s=settings.publish_timeout_s,
            exchange_cache_ttl_s=settings.exchange_cache_ttl_s,
            exchange_missing_ttl_s=settings.exchange_missing_ttl_s,
            max_in_flight=settings.max_in_flight,
        )
    except BaseException:
        if lookups is not None:
            await lookups.close()
        await connection.close()
        raise
