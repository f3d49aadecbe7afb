"""The app factory. Every resource (connection, channels, store) is built in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from consumers.store import open_store
from gateway import problems
from gateway.auth import Authenticator
from gateway.deps import PublishServices
from gateway.fastpath import Gateway
from gateway.idempotency import SqlIdempotencyKeys, purge_periodically
from gateway.metrics import MeteredPublisher, Metrics
from gateway.openapi import declare_security
from gateway.publisher import AmqpPublisher
from gateway.routes import batch, dead_letters, health, publish, read
from gateway.schemas import Schemas
from gateway.settings import GatewaySettings
from hareway import broker
from hareway.topology import declare_topology, load_topology

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topology = await asyncio.to_thread(load_topology, settings.topology_file)
        schemas = Schemas(topology.schemas)
        authenticator = Authenticator.from_settings(settings)
        connection = await broker.connect(settings.rabbitmq_url, "gateway")
        try:
            await declare_topology(connection, topology)
            metrics = Metrics()
            amqp = await AmqpPublisher.open(
                connection,
                channels=settings.publish_channels,
                timeout_s=settings.publish_timeout_s,
                exchange_cache_ttl_s=settings.exchange_cache_ttl_s,
                max_in_flight=settings.max_in_flight,
            )
            publisher = MeteredPublisher(amqp, metrics)
            store = await open_store(settings.database_url)
        except BaseException:
            await connection.close()
            raise
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.publisher = publisher
        app.state.store = store
        app.state.authenticator = authenticator
        keys = SqlIdempotencyKeys(
            store.engine,
            ttl_s=settings.idempotency_ttl_s,
            # A claim outlives its own request by a margin, never a gateway that died.
            pending_ttl_s=settings.publish_timeout_s * 2 + 10,
            wait_s=settings.publish_timeout_s + 1,
        )
        app.state.publish_services = PublishServices(
            publisher, settings, schemas, keys, authenticator
        )
        purging = asyncio.create_task(purge_periodically(keys, settings.idempotency_purge_s))
        log.info("gateway ready, publishing to %s", broker.redact(settings.rabbitmq_url))
        try:
            yield
        finally:
            purging.cancel()
            await publisher.close()
            await store.close()

    app = Gateway(
        title="hareway",
        summary="An HTTP gateway for RabbitMQ: 2xx only once the broker confirmed",
        version="0.1.0",
        lifespan=lifespan,
    )
    problems.install(app, settings.retry_after_s)
    declare_security(app)
    app.include_router(publish.router)
    app.include_router(batch.router)
    app.include_router(read.router)
    app.include_router(health.router)
    app.include_router(dead_letters.router)
    return app
