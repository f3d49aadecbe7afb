"""One queue's consume loop: take deliveries, commit them in batches, then ack.

The order that makes "ack means committed" true lives here: a batch is acked only after
its transaction committed and its failed messages were confirmed on their retry or
dead-letter queue.

A batch the store cannot take is held, unacked, until a commit of that same batch
succeeds (tried after a backoff that grows); meanwhile the consumer takes nothing beyond
its prefetch window, which the held deliveries fill. Requeueing instead would deliver the
batch again and again, and on a quorum queue every redelivery counts toward
`x-delivery-limit`, so a long outage would dead-letter messages that did nothing wrong.
(Not `basic.cancel`: on a quorum queue, RabbitMQ 3.10 delivered some messages again after
a cancel and a new consume, each with an `x-delivery-count`. The broker's own
`consumer_timeout`, 30 minutes by default, returns deliveries held longer: one
redelivery per half hour of outage.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from consumers.batch import BatchProcessor, Failure, Item, Outcome
from consumers.decode import Decoded, decode
from consumers.errors import QueueNotFound, StoreUnavailable, Unrepublishable
from consumers.metrics import ConsumerMetrics
from consumers.push import Pushed, Pusher
from consumers.retry import Republisher
from consumers.settings import ConsumerSettings
from consumers.subscription import Subscription
from hareway.schemas import SchemaRules
from hareway.tracing import OFF, Tracing

log = logging.getLogger(__name__)


class QueueWorker:
    def __init__(
        self,
        channel: AbstractChannel,
        queue_name: str,
        processor: BatchProcessor,
        republisher: Republisher,
        settings: ConsumerSettings,
        schemas: SchemaRules | None = None,
        metrics: ConsumerMetrics | None = None,
        *,
        tracing: Tracing = OFF,
        pusher: Pusher | None = None,
    ) -> None:
        self._channel = channel
        # A queue with a push subscription: each committed message is POSTed before the ack.
        self._pusher = pusher
        self._queue_name = queue_name
        self._processor = processor
        self._republisher = republisher
        self._schemas = schemas
        self._metrics = metrics or ConsumerMetrics()
        self._stored_count = self._metrics.stored.labels(queue_name)
        self._commit_seconds = self._metrics.commit_seconds.labels(queue_name)
        self._batch_size_seen = self._metrics.batch_size.labels(queue_name)
        self._tracing = tracing
        self._max_decoded_bytes = settings.max_decoded_body_bytes
        self._batch_max_bytes = settings.batch_max_bytes
        self._pending_bytes = 0
        self._batch_size = min(settings.batch_size, settings.prefetch)
        self._max_wait = settings.batch_max_wait_ms / 1000
        self._backoff_initial = settings.store_backoff_initial_s
        self._backoff_max = settings.store_backoff_max_s
        self._backoff = self._backoff_initial
        self._pending: list[Item] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._stopped = asyncio.Event()
        self._subscription = Subscription(channel, queue_name, self._on_message)
        self._flusher: asyncio.Task[None] | None = None
        # Batches whose pushes are under way while the next ones commit (see `_flush`).
        self._finishing: set[asyncio.Task[None]] = set()
        self.stored = 0
        # False from a failed commit until the next one succeeds: the readiness probe.
        self.store_ok = True

    @property
    def ready(self) -> bool:
        return self.store_ok and not self._channel.is_closed and not self._stopped.is_set()

    async def start(self) -> None:
        # Passive: consume queues that exist, declared by the topology file or by anyone else.
        try:
            await self._channel.get_queue(self._queue_name, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise QueueNotFound(f"no queue {self._queue_name!r} on the broker") from None
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self._queue_name}")
        await self._subscription.start()
        log.info("consuming %s", self._queue_name)

    async def stop(self) -> None:
        """Take no new deliveries, then commit and ack everything already taken."""
        self._stopped.set()
        if self._pusher is not None:
            self._pusher.stop()
        try:
            await self._subscription.cancel()
        except Exception:  # the channel may be gone already; unacked ones get requeued
            log.warning("cancelling the consumer of %s failed", self._queue_name, exc_info=True)
        # Deliveries the client had already read run their callbacks on the next ticks.
        await asyncio.sleep(0)
        self._arrived.set()
        self._full.set()
        if self._flusher is not None:
            await self._flusher
        await self._finished()
        if self._pusher is not None:
            await self._pusher.close()
        await self._republisher.close()
        log.info("stopped %s after storing %d messages", self._queue_name, self.stored)

    def _on_message(self, message: DeliveredMessage) -> None:
        span = self._start_span(message) if self._tracing.enabled else None
        decoded = decode(self._queue_name, message, self._schemas, self._max_decoded_bytes)
        if span is not None:
            self._decoded(span, decoded)
        self._pending.append(Item(decoded, message, time.monotonic(), span))
        self._pending_bytes += len(message.body)
        self._arrived.set()
        if len(self._pending) >= self._batch_size or self._pending_bytes >= self._batch_max_bytes:
            self._full.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._arrived.wait()
            while self._pending:
                # A batch commits when full or when its oldest message waited `max_wait`.
                # The messages that came in while the last batch committed wait too
                # instead of going out as a small batch: each commit costs as much as a
                # hundred rows, and under load the rest of the batch is on its way.
                wait = self._pending[0].arrived + self._max_wait - time.monotonic()
                if wait > 0 and not self._full.is_set() and not self._stopped.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), wait)
                    continue
                await self._flush()
            if self._stopped.is_set():
                return
            self._arrived.clear()
            self._full.clear()

    def _take_batch(self) -> list[Item]:
        """The oldest batch-sized slice of what waits, cut short at the byte budget."""
        size, budget = 0, 0
        for item in self._pending[: self._batch_size]:
            budget += len(item.message.body)
            size += 1
            if budget >= self._batch_max_bytes:
                break
        batch = self._pending[:size]
        del self._pending[:size]
        self._pending_bytes -= budget
        if len(self._pending) < self._batch_size and self._pending_bytes < self._batch_max_bytes:
            self._full.clear()
        return batch

    async def _flush(self) -> None:
        batch = self._take_batch()
        outcome = await self._commit(batch)
        if outcome is None:
            return  # stopped while the store was out: the batch went back to the queue
        self.stored += outcome.stored
        self._count(outcome)
        if self._pusher is None or self._pusher.ordered:
            await self._finish(batch, outcome, each=False)
            return
        # A pushed batch is finished (POSTed, outcomes kept, acked) in a task of its own,
        # so the next batch commits and pushes meanwhile instead of waiting for this one's
        # slowest POST; the prefetch window bounds how many are under way. Each message is
        # then acked by itself: a `multiple` ack would take in the batches still pushing.
        # While the breaker is open, one batch at a time: each would probe the target.
        if self._pusher.paused:
            await self._finished()
        task = asyncio.create_task(
            self._finish(batch, outcome, each=True), name=f"push {self._queue_name}"
        )
        self._finishing.add(task)
        task.add_done_callback(self._finish_done)

    def _finish_done(self, task: asyncio.Task[None]) -> None:
        self._finishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its deliveries stay unacked until the channel closes: nothing is lost.
            log.error(
                "finishing a pushed batch of %s failed",
                self._queue_name,
                exc_info=task.exception(),
            )

    async def _finished(self) -> None:
        """Wait for every pushed batch under way."""
        while self._finishing:
            await asyncio.wait(set(self._finishing))

    async def _finish(self, batch: list[Item], outcome: Outcome, *, each: bool) -> None:
        """Push what committed (with a subscription), send the failures on, settle the
        batch: with one `multiple` ack, or, `each`, message by message."""
        held: set[int] = set()
        if self._pusher is not None:
            pushed = await self._push(batch, outcome)
            if pushed is None:
                # Stopping before the outcomes were kept: all of it comes back, pushed again
                # under the same webhook-id (receivers deduplicate by it).
                if each:
                    await _settle_each(batch, {id(item) for item in batch})
                else:
                    await _settle(batch, ack=False)
                _end_spans(batch)
                return
            outcome.failures += pushed.failures
            held = pushed.held
        unsent = await self._send_failures(outcome) | held
        if not unsent:
            if each:
                await _settle_each(batch, unsent)
            else:
                await _settle(batch, ack=True)
            _end_spans(batch)
            return
        # Rare: a retry publish failed (broker trouble, a delay queue missing). Ack what is
        # done; the rest goes back to the queue after a pause, not straight into a hot loop.
        await self._pause(self._backoff_initial)
        await _settle_each(batch, unsent)
        _end_spans(batch)

    async def _push(self, batch: list[Item], outcome: Outcome) -> Pushed | None:
        """POST what the batch committed (not what is off to a retry or the dead letters)."""
        assert self._pusher is not None
        failed = {id(failure.item) for failure in outcome.failures}
        pushed = await self._pusher.deliver([item for item in batch if id(item) not in failed])
        if pushed is not None:
            dead = sum(failure.delay_ms is None for failure in pushed.failures)
            if dead:
                self._metrics.dead_lettered.labels(self._queue_name).inc(dead)
            if len(pushed.failures) > dead:
                self._metrics.retried.labels(self._queue_name).inc(len(pushed.failures) - dead)
        return pushed

    def _count(self, outcome: Outcome) -> None:
        queue = self._queue_name
        self._stored_count.inc(outcome.stored)
        for conflict in outcome.conflicts:
            # Kept, not dropped: an operator should know an id was reused for other data.
            log.warning(
                "%s already holds %r with another body: kept as a conflict",
                queue,
                conflict.message_id,
            )
        if outcome.conflicts:
            self._metrics.conflicts.labels(queue).inc(len(outcome.conflicts))
        if outcome.duplicates:
            self._metrics.duplicates.labels(queue).inc(outcome.duplicates)
        if outcome.commits > 1:
            self._metrics.refused.labels(queue).inc(
                sum(failure.error.startswith("the store refused") for failure in outcome.failures)
            )
        dead = sum(failure.delay_ms is None for failure in outcome.failures)
        if dead:
            self._metrics.dead_lettered.labels(queue).inc(dead)
        if len(outcome.failures) > dead:
            self._metrics.retried.labels(queue).inc(len(outcome.failures) - dead)

    async def _send_failures(self, outcome: Outcome) -> set[int]:
        """Publish every failed message to its retry or dead-letter queue, confirms in
        flight together; the ids of the items whose publish failed."""
        if not outcome.failures:
            return set()
        results = await asyncio.gather(
            *(self._send(failure) for failure in outcome.failures), return_exceptions=True
        )
        unsent: set[int] = set()
        for failure, result in zip(outcome.failures, results, strict=True):
            if isinstance(result, Unrepublishable):
                log.warning(
                    "%s: %s; kept as a dead letter in the store only", result, failure.error
                )
                if failure.delay_ms is not None:
                    # Not stored yet: a retry stores nothing until it succeeds.
                    await self._processor.keep_dead_letter(failure.item, failure.error)
            elif isinstance(result, BaseException):
                log.warning("%s", result)
                unsent.add(id(failure.item))
        return unsent

    async def _send(self, failure: Failure) -> None:
        item = failure.item
        attempts = item.decoded.record.attempts
        if item.span is not None:
            # The next attempt (or the dead letter) continues this attempt's trace.
            properties = item.message.header.properties
            properties.headers = dict(properties.headers or {})
            self._tracing.inject(properties.headers, item.span)
        if failure.delay_ms is None:
            log.warning(
                "dead-lettering %s from %s after %d attempt(s): %s",
                item.decoded.record.message_id,
                self._queue_name,
                attempts,
                failure.error,
            )
            await self._republisher.to_dead_letters(item.decoded, item.message, failure.error)
            return
        log.info(
            "retrying %s from %s in %d ms (attempt %d failed): %s",
            item.decoded.record.message_id,
            self._queue_name,
            failure.delay_ms,
            attempts,
            failure.error,
        )
        await self._republisher.to_retry(
            item.decoded, item.message, failure.error, failure.delay_ms
        )

    async def _commit(self, batch: list[Item]) -> Outcome | None:
        """Commit `batch`, holding it while the store is out; None if stopped meanwhile."""
        holding = False
        while True:
            began = time.perf_counter()
            began_ns = time.time_ns()
            try:
                outcome = await self._processor.process(batch)
            except StoreUnavailable as exc:
                reason = str(exc)
            except Exception as exc:
                # Not a known outage but still no commit: keep the deliveries and this loop
                # alive, and say loudly what went wrong.
                log.exception("committing a batch of %s failed", self._queue_name)
                reason = f"{type(exc).__name__}: {exc}"[:300]
            else:
                # -- metrics and traces of the commit (docs/operations.md) --
                self._commit_seconds.observe(time.perf_counter() - began)
                self._batch_size_seen.observe(len(batch))
                if self._tracing.enabled:
                    self._committed(batch, outcome, began_ns)
                self.store_ok = True
                self._backoff = self._backoff_initial
                if holding:
                    log.info("the store took %s's held batch: storing again", self._queue_name)
                return outcome
            if not holding:
                holding = True
                self.store_ok = False
                self._metrics.store_outages.labels(self._queue_name).inc()
            if self._stopped.is_set():
                # Shutting down: the deliveries go back to the queue either way.
                await _settle(batch, ack=False)
                _end_spans(batch)
                return None
            log.warning(
                "store unavailable: %s holds %d deliveries unacked and takes no more than "
                "its prefetch; trying again in %.1fs: %s",
                self._queue_name,
                len(batch),
                self._backoff,
                reason,
            )
            await self._pause(self._backoff)
            self._backoff = min(self._backoff * 2, self._backoff_max)

    # -- tracing, while it is on (hareway/tracing.py) --------------------------------------
    def _start_span(self, message: DeliveredMessage) -> Any:
        headers = message.header.properties.headers or {}
        parent = self._tracing.extract(headers)
        return self._tracing.start(
            f"{self._queue_name} process",
            "consumer",
            parent,
            {
                "messaging.system": "rabbitmq",
                "messaging.destination.name": self._queue_name,
                "messaging.message.id": str(message.header.properties.message_id or ""),
            },
        )

    def _decoded(self, span: Any, decoded: Decoded) -> None:
        decode_span = self._tracing.start(f"{self._queue_name} decode", "internal", span)
        if decoded.poison is not None:
            decode_span.set_attribute("hareway.poison", decoded.poison)
        decode_span.end()

    def _committed(self, batch: list[Item], outcome: Outcome, began_ns: int) -> None:
        """A commit span per message the transaction kept (not those off to a retry), all
        of them the batch's one transaction."""
        retried = {id(failure.item) for failure in outcome.failures if failure.delay_ms is not None}
        for item in batch:
            if item.span is not None and id(item) not in retried:
                commit = self._tracing.start(
                    f"{self._queue_name} commit",
                    "internal",
                    item.span,
                    {"hareway.batch_size": len(batch)},
                    start_time=began_ns,
                )
                commit.end()

    async def _pause(self, seconds: float) -> None:
        # Waiting before trying again is what keeps failures from a hot loop; a SIGTERM
        # cuts the wait short, since the deliveries go back to the queue either way.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)


def _end_spans(batch: list[Item]) -> None:
    """End the consumer spans of a settled batch (none while tracing is off)."""
    for item in batch:
        if item.span is not None:
            item.span.end()
            item.span = None


async def _settle(batch: list[Item], *, ack: bool) -> None:
    """Ack (or requeue) a batch with one `multiple=True` frame per channel.

    A batch holds every delivery its channel handed over up to its last one (a reconnect
    starts a new channel), so the multiple flag covers exactly the batch. A delivery of a
    channel that has closed since is already back in its queue; the store's unique key
    absorbs its redelivery.
    """
    last_by_channel: dict[int, DeliveredMessage] = {}
    for item in batch:
        last_by_channel[id(item.message.channel)] = item.message
    for message in last_by_channel.values():
        tag = message.delivery_tag
        assert tag is not None  # a consumer's delivery always has one
        try:
            if ack:
                await message.channel.basic_ack(tag, multiple=True)
            else:
                await message.channel.basic_nack(tag, multiple=True, requeue=True)
        except Exception:
            log.warning("could not settle deliveries on a closed channel", exc_info=True)


async def _settle_each(batch: list[Item], unsent: set[int]) -> None:
    for item in batch:
        tag = item.message.delivery_tag
        assert tag is not None
        try:
            if id(item) in unsent:
                await item.message.channel.basic_nack(tag, requeue=True)
            else:
                await item.message.channel.basic_ack(tag)
        except Exception:
            log.warning("could not settle a delivery on a closed channel", exc_info=True)
