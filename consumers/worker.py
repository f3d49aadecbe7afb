"""One queue's consume loop: take deliveries, commit them in batches, then ack.

The order that makes "ack means committed" true lives here: a batch is acked only after
its transaction committed and its failed messages were confirmed on their retry or
dead-letter queue; a batch the store could not take is requeued after a backoff that
grows, never acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from consumers.batch import BatchProcessor, Failure, Item, Outcome
from consumers.decode import decode
from consumers.errors import QueueNotFound, StoreUnavailable
from consumers.retry import Republisher
from consumers.settings import ConsumerSettings
from consumers.subscription import Subscription
from hareway.schemas import SchemaRules

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
    ) -> None:
        self._channel = channel
        self._queue_name = queue_name
        self._processor = processor
        self._republisher = republisher
        self._schemas = schemas
        self._batch_size = min(settings.batch_size, settings.prefetch)
        self._max_wait = settings.batch_max_wait_ms / 1000
        self._backoff_initial = settings.store_backoff_initial_s
        self._backoff_max = settings.store_backoff_max_s
        self._backoff = self._backoff_initial
        self._pending: list[Item] = []
        # When the first message of each batch-sized slice of `_pending` arrived: a flush
        # takes a whole slice (or everything), so slices and batches line up.
        self._slice_started: deque[float] = deque()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._stopped = asyncio.Event()
        self._subscription = Subscription(channel, queue_name, self._on_message)
        self._flusher: asyncio.Task[None] | None = None
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
        await self._republisher.close()
        log.info("stopped %s after storing %d messages", self._queue_name, self.stored)

    def _on_message(self, message: DeliveredMessage) -> None:
        if len(self._pending) % self._batch_size == 0:
            self._slice_started.append(time.monotonic())
        self._pending.append(Item(decode(self._queue_name, message, self._schemas), message))
        self._arrived.set()
        if len(self._pending) >= self._batch_size:
            self._full.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._arrived.wait()
            while self._pending:
                # A batch commits when full or when its oldest message waited `max_wait`.
                # The messages that came in while the last batch committed wait too
                # instead of going out as a small batch: each commit costs as much as a
                # hundred rows, and under load the rest of the batch is on its way.
                wait = self._slice_started[0] + self._max_wait - time.monotonic()
                if wait > 0 and not self._full.is_set() and not self._stopped.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), wait)
                    continue
                await self._flush()
            if self._stopped.is_set():
                return
            self._arrived.clear()
            self._full.clear()

    async def _flush(self) -> None:
        batch = self._pending[: self._batch_size]
        del self._pending[: self._batch_size]
        self._slice_started.popleft()
        if len(self._pending) < self._batch_size:
            self._full.clear()
        try:
            outcome = await self._processor.process(batch)
        except StoreUnavailable as exc:
            await self._requeue_after_backoff(batch, str(exc))
            return
        except Exception as exc:
            # Not a known outage but still no commit: keep the deliveries and this loop
            # alive, and say loudly what went wrong.
            log.exception("committing a batch of %s failed", self._queue_name)
            await self._requeue_after_backoff(batch, f"{type(exc).__name__}: {exc}"[:300])
            return
        self.store_ok = True
        self._backoff = self._backoff_initial
        self.stored += outcome.stored
        unsent = await self._send_failures(outcome)
        if not unsent:
            await _settle(batch, ack=True)
            return
        # Rare: a retry publish failed (broker trouble, a delay queue missing). Ack what is
        # done; the rest goes back to the queue after a pause, not straight into a hot loop.
        await self._pause(self._backoff_initial)
        await _settle_each(batch, unsent)

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
            if isinstance(result, BaseException):
                log.warning("%s", result)
                unsent.add(id(failure.item))
        return unsent

    async def _send(self, failure: Failure) -> None:
        item = failure.item
        attempts = item.decoded.record.attempts
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

    async def _requeue_after_backoff(self, batch: list[Item], reason: str) -> None:
        self.store_ok = False
        log.warning(
            "store unavailable, requeueing %d deliveries of %s after a backoff of %.1fs: %s",
            len(batch),
            self._queue_name,
            self._backoff,
            reason,
        )
        await self._pause(self._backoff)
        self._backoff = min(self._backoff * 2, self._backoff_max)
        await _settle(batch, ack=False)

    async def _pause(self, seconds: float) -> None:
        # Waiting before a requeue is what keeps failures from a hot loop; a SIGTERM cuts
        # the wait short, since the deliveries go back to the queue either way.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)


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
