"""Prometheus metrics of a consumer process, served on its health port at `/metrics`.

Each process has a registry of its own: two runtimes in one process (tests) must not
share counters. docs/operations.md lists every metric and what to alert on.
"""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hareway.store.janitor import SweepReport

# Seconds: a SQLite commit takes a few milliseconds, a PostgreSQL one over a network more.
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_HANDLER_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
# Seconds: a local target answers in a millisecond, a timeout is seconds.
_PUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, ["queue"], registry=self.registry)

        self.stored = counter(
            "hareway_consumer_stored_messages",
            "Messages committed as new rows (a redelivery of a stored one is a duplicate)",
        )
        self.conflicts = counter(
            "hareway_consumer_conflicts",
            "Messages with an id their queue had stored for another body; kept as conflicts",
        )
        self.retried = counter(
            "hareway_consumer_retried_messages", "Messages sent down the retry ladder"
        )
        self.dead_lettered = counter(
            "hareway_consumer_dead_lettered_messages", "Messages sent to the dead letters"
        )
        self.refused = counter(
            "hareway_consumer_refused_messages",
            "Messages the store refused for their data (then retried or dead-lettered)",
        )
        self.store_outages = counter(
            "hareway_consumer_store_outages",
            "Times the queue held its batch, unacked, because the store was out",
        )
        self.duplicates = counter(
            "hareway_consumer_duplicate_messages",
            "Deliveries of a message their queue had stored already (same body): no new row",
        )
        self.commit_seconds = Histogram(
            "hareway_consumer_commit_seconds",
            "One batch: from handing it to the store until its transaction committed",
            ["queue"],
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "hareway_consumer_batch_size",
            "Deliveries per committed batch",
            ["queue"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "hareway_consumer_handler_seconds",
            "One call of a user handler (--app), raised or not",
            ["queue"],
            buckets=_HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.store_up = Gauge(
            "hareway_consumer_store_up",
            "1 while the queue's last commit succeeded, 0 from a failed one until the next",
            ["queue"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "hareway_consumer_queue_depth",
            "Messages ready in the queue, sampled from the broker every QUEUE_SAMPLE_S: the lag",
            ["queue"],
            registry=self.registry,
        )
        self.dead_letter_depth = Gauge(
            "hareway_consumer_dead_letter_queue_depth",
            "Messages in the queue's <queue>.dlq, sampled from the broker (queues with a ladder)",
            ["queue"],
            registry=self.registry,
        )
        # -- push subscriptions (docs/push.md), one per queue --
        self.push_delivered = counter(
            "hareway_consumer_push_delivered_messages",
            "Messages a push subscription's target took (answered 2xx)",
        )
        self.push_failures = Counter(
            "hareway_consumer_push_failures",
            "Failed pushes by reason: the status class (3xx, 4xx, 5xx), timeout, connection",
            ["queue", "reason"],
            registry=self.registry,
        )
        self.push_seconds = Histogram(
            "hareway_consumer_push_seconds",
            "One push: from sending the request until the answer (or the failure)",
            ["queue"],
            buckets=_PUSH_BUCKETS,
            registry=self.registry,
        )
        self.push_breaker_open = Gauge(
            "hareway_consumer_push_breaker_open",
            "1 while the subscription's breaker holds the queue (its target keeps failing)",
            ["queue"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "hareway_consumer_broker_reconnects",
            "Times the broker connection was lost and made again",
            registry=self.registry,
        )
        self.connected = Gauge(
            "hareway_consumer_broker_connected",
            "1 while the broker connection is open",
            registry=self.registry,
        )
        self.retention_rows = Counter(
            "hareway_consumer_retention_rows",
            "Rows the retention sweep changed: bodies expired, key rows forgotten",
            ["stage"],
            registry=self.registry,
        )
        self.retention_longest_transaction = Gauge(
            "hareway_consumer_retention_longest_transaction_seconds",
            "The longest transaction of the last retention sweep: what a writer may wait",
            registry=self.registry,
        )

    def swept(self, report: SweepReport) -> None:
        self.retention_rows.labels("expired").inc(report.expired)
        self.retention_rows.labels("forgotten").inc(report.forgotten)
        if not report.skipped:
            self.retention_longest_transaction.set(report.longest_s)

    def watch(self, connection: AbstractRobustConnection) -> None:
        connection.reconnect_callbacks.add(lambda *_: self.reconnects.inc())
        self.reconnects.inc(0)
        self.connected.set_function(
            lambda: float(not connection.is_closed and connection.connected.is_set())
        )

    def value(self, name: str, queue: str) -> float:
        """A per-queue sample's current value (0 before it was first set): for the summary."""
        return self.registry.get_sample_value(name, {"queue": queue}) or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
