"""Prometheus metrics: what the gateway published, how it ended, how long confirms took.

`MeteredPublisher` wraps any `Publisher`, so every path that publishes (single, batch,
redrive) is counted in one place. Each app gets a registry of its own: two apps in one
process (tests) must not share counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.errors import GatewayError
from gateway.publisher import BatchResult, Confirmed, Outgoing, Publisher

__all__ = ["CONTENT_TYPE_LATEST", "MeteredPublisher", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
        await self._inner.close()

    def _count(self, confirmed: Confirmed) -> None:
        self._confirmed.inc()
        self._confirm_seconds.observe(time.perf_counter() - confirmed.sent_at)
