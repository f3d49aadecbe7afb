"""One queue's consume loop: take deliveries, commit them in batches, then ack.

The order that makes "ack means committed" true lives here: a batch is acked only after
`Store.save` returned, and a batch the store could not take is requeued, never acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from consumers.decode import to_record
from consumers.errors import QueueNotFound, StoreUnavailable
from consumers.settings import ConsumerSettings
from consumers.store import DeliveryRecord, Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    record: DeliveryRecord
    message: AbstractIncomingMessage


class QueueWorker:
    def __init__(
        self,
        channel: AbstractChannel,
        queue_name: str,
        store: Store,
        settings: ConsumerSettings,
    ) -> None:
        self._channel = channel
        self._queue_name = queue_name
        self._store = store
        self._batch_size = min(settings.batch_size, settings.prefetch)
        self._max_wait = settings.batch_max_wait_ms / 1000
        self._backoff_initial = settings.store_backoff_initial_s
        self._backoff_max = settings.store_backoff_max_s
        self._backoff = self._backoff_initial
        self._pending: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self.stored = 0

    async def start(self) -> None:
        # Passive: consume queues that exist, declared by the topology file or by anyone else.
        try:
            self._queue = await self._channel.get_queue(self._queue_name, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise QueueNotFound(f"no queue {self._queue_name!r} on the broker") from None
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self._queue_name}")
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming %s", self._queue_name)

    async def stop(self) -> None:
        """Take no new deliveries, then commit and ack everything already taken."""
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:  # the channel may be gone already; unacked ones get requeued
                log.warning("cancelling the consumer of %s failed", self._queue_name, exc_info=True)
        # Deliveries the client had already read run their callbacks on the next ticks.
        await asyncio.sleep(0)
        self._arrived.set()
        self._full.set()
        if self._flusher is not None:
            await self._flusher
        log.info("stopped %s after storing %d messages", self._queue_name, self.stored)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._pending.append(_Pending(to_record(self._queue_name, message), message))
        self._arrived.set()
        if len(self._pending) >= self._batch_size:
            self._full.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._max_wait)
            while self._pending:
                await self._flush()
            if self._stopping:
                return
            self._arrived.clear()
            self._full.clear()

    async def _flush(self) -> None:
        batch = self._pending[: self._batch_size]
        del self._pending[: self._batch_size]
        if len(self._pending) < self._batch_size:
            self._full.clear()
        try:
            await self._store.save([item.record for item in batch])
        except StoreUnavailable as exc:
            await self._requeue_after_backoff(batch, exc)
            return
        self._backoff = self._backoff_initial
        self.stored += len(batch)
        await _settle(batch, ack=True)

    async def _requeue_after_backoff(self, batch: list[_Pending], exc: StoreUnavailable) -> None:
        log.warning(
            "store unavailable, requeueing %d deliveries of %s in %.1fs: %s",
            len(batch),
            self._queue_name,
            self._backoff,
            exc,
        )
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self._backoff_max)
        await _settle(batch, ack=False)


async def _settle(batch: list[_Pending], *, ack: bool) -> None:
    """Ack (or requeue) a batch with one `multiple=True` frame per channel.

    A batch holds every delivery its channel handed over up to its last one (a reconnect
    starts a new channel), so the multiple flag covers exactly the batch. A delivery of a
    channel that has closed since is already back in its queue; the store's unique key
    absorbs its redelivery.
    """
    last_by_channel: dict[int, AbstractIncomingMessage] = {}
    for item in batch:
        last_by_channel[id(item.message.channel)] = item.message
    for message in last_by_channel.values():
        try:
            if ack:
                await message.ack(multiple=True)
            else:
                await message.nack(multiple=True, requeue=True)
        except Exception:
            log.warning("could not settle deliveries on a closed channel", exc_info=True)
