"""Prometheus metrics: what the gateway published, how it ended, how long confirms took.

`MeteredPublisher` wraps any `Publisher`, so every path that publishes (single, batch,
redrive) is counted in one place. Each app gets a registry of its own: two apps in one
process (tests) must not share counters.

With `--workers N`, `python -m gateway` sets `PROMETHEUS_MULTIPROC_DIR` before the workers
start (prometheus-client's multiprocess mode): every worker writes its values to files
there, and `/metrics`, whichever worker answers it, adds up all of them. A gauge whose value
is read when scraped (`set_function`) cannot work across processes, so there the
connection gauges are refreshed every second instead. docs/operations.md lists every metric.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.errors import GatewayError
from gateway.publisher import BatchResult, Confirmed, Outgoing, Publisher, QueueCounts

__all__ = ["CONTENT_TYPE_LATEST", "MeteredPublisher", "Metrics"]


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# How often, in multiprocess mode, each worker writes its connection gauges.
_REFRESH_S = 1.0


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess = multiprocess()
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self._refresher: asyncio.Task[None] | None = None
        self.published = Counter(
            "hareway_published_messages",
            "Messages the gateway tried to publish, by outcome (confirmed or a problem type)",
            ["outcome"],
            registry=self.registry,
        )
        self.confirm_seconds = Histogram(
            "hareway_publish_confirm_seconds",
            "From handing a message to the channel until the broker confirmed it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

        self.reconnects = Counter(
            "hareway_broker_reconnects",
            "Times a broker connection was lost and made again (publish: the one publishes "
            "share; lookups: exchange lookups and first publishes)",
            ["connection"],
            registry=self.registry,
        )
        self.connected = Gauge(
            "hareway_broker_connected",
            "1 while the broker connection is open (with --workers: the lowest of the workers)",
            ["connection"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.responses = Counter(
            "hareway_http_responses",
            "HTTP answers by status code, every path included",
            ["status"],
            registry=self.registry,
        )
        # Label lookups take a lock each: one child per status code, made on first use.
        self._responses: dict[int, Counter] = {}

    def watch(self, connection: AbstractRobustConnection, name: str) -> None:
        counter = self.reconnects.labels(name)
        counter.inc(0)  # shown from the start, not only after the first reconnect
        connection.reconnect_callbacks.add(lambda *_: counter.inc())

        def connected() -> float:
            return float(not connection.is_closed and connection.connected.is_set())

        gauge = self.connected.labels(name)
        if not self._multiprocess:
            gauge.set_function(connected)
            return
        gauge.set(connected())
        self._gauges.append((gauge, connected))
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_S)
            for gauge, value in self._gauges:
                gauge.set(value())

    def answered(self, status: int) -> None:
        child = self._responses.get(status)
        if child is None:
            child = self._responses[status] = self.responses.labels(str(status))
        child.inc()

    def render(self) -> bytes:
        if not self._multiprocess:
            return generate_latest(self.registry)
        for gauge, value in self._gauges:
            gauge.set(value())
        # Every worker's values, added up (counters, histograms) or the lowest (gauges).
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()


class MeteredPublisher:
    def __init__(self, inner: Publisher, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        # Label lookups take a lock each; the hot ones are looked up once.
        self._confirmed = metrics.published.labels("confirmed")
        self._confirm_seconds = metrics.confirm_seconds

    @property
    def ready(self) -> bool:
        return self._inner.ready

    def check_ready(self) -> None:
        self._inner.check_ready()

    async def prepare(self, exchange: str) -> None:
        await self._inner.prepare(exchange)

    async def queue_exists(self, queue: str) -> bool:
        return await self._inner.queue_exists(queue)

    async def queue_counts(self, queue: str) -> QueueCounts | None:
        return await self._inner.queue_counts(queue)

    async def publish(self, message: Outgoing) -> Confirmed:
        try:
            confirmed = await self._inner.publish(message)
        except GatewayError as exc:
            self._metrics.published.labels(exc.slug).inc()
            raise
        self._count(confirmed)
        return confirmed

    async def publish_batch(self, messages: list[Outgoing]) -> list[BatchResult]:
        results = await self._inner.publish_batch(messages)
        now = time.perf_counter()
        outcomes: dict[str, int] = {}
        for result in results:
            if isinstance(result, Confirmed):
                self._confirm_seconds.observe(now - result.sent_at)
                outcome = "confirmed"
            else:
                outcome = result.slug
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for outcome, count in outcomes.items():
            self._metrics.published.labels(outcome).inc(count)
        return results

    async def close(self) -> None:
        self._metrics.close()
        await self._inner.close()

    def _count(self, confirmed: Confirmed) -> None:
        self._confirmed.inc()
        self._confirm_seconds.observe(time.perf_counter() - confirmed.sent_at)
