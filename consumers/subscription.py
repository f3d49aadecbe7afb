"""A queue's consumer on the aiormq channel under an aio-pika channel, kept alive across
reconnects.

aio-pika wraps every delivery in an `IncomingMessage` (two dozen guarded attribute sets)
and runs the callback in a second task; consuming on the aiormq channel directly hands
over the `DeliveredMessage` aiormq builds anyway. The price is that aio-pika no longer
restores this consumer: a robust channel that reopens (a reconnect, or a channel error)
gets a new aiormq channel, and `_on_reopen` consumes again on it. A consumer the broker
cancels (its queue deleted, say) is consumed again after a pause, as aio-pika would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from aio_pika.abc import AbstractChannel, AbstractRobustChannel
from aiormq.abc import AbstractChannel as UnderlayChannel
from aiormq.abc import ConsumerCallback, DeliveredMessage
from pamqp import commands as spec

from hareway.amqp.delivery import inline

log = logging.getLogger(__name__)

OnDelivery = Callable[[DeliveredMessage], None]


class Subscription:
    def __init__(
        self,
        channel: AbstractChannel,
        queue: str,
        on_delivery: OnDelivery,
        retry_after_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._on_delivery = on_delivery
        self._retry_after_s = retry_after_s
        self._retry_max_s = retry_max_s
        # The aiormq channel and tag of the live consumer, None while there is none.
        self._current: tuple[UnderlayChannel, str] | None = None
        self._cancelled = False
        self._resubscriber: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consume()
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.add(self._on_reopen)

    async def cancel(self) -> None:
        """Stop consuming. Deliveries already read still reach `on_delivery`, on the next
        event-loop ticks."""
        self._cancelled = True
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.discard(self._on_reopen)
        await self._stop_resubscribing()
        if self._current is None:
            return
        channel, tag = self._current
        self._current = None
        if not channel.is_closed:
            await channel.basic_cancel(tag)

    async def _stop_resubscribing(self) -> None:
        if self._resubscriber is not None and self._resubscriber is not asyncio.current_task():
            self._resubscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resubscriber
        self._resubscriber = None

    async def _consume(self) -> None:
        channel = await self._channel.get_underlay_channel()
        # A plain function, run in the channel's reader (hareway/amqp/delivery.py): aiormq
        # would give each delivery a task of its own.
        deliver = cast(ConsumerCallback, self._deliver)
        ok = await channel.basic_consume(self._queue, deliver, no_ack=False)
        assert ok.consumer_tag is not None  # the broker always names the consumer
        channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        self._current = (channel, ok.consumer_tag)

    @inline
    def _deliver(self, message: DeliveredMessage) -> None:
        self._on_delivery(message)

    async def _on_reopen(self, _channel: AbstractRobustChannel | None, /) -> None:
        # A new aiormq channel: the old consumer died with the old one, and deliveries it
        # left unacked are back in the queue (acks for them fail, harmlessly; see worker).
        self._current = None
        if self._cancelled:
            return
        # One consumer per channel: a resubscription under way would add a second.
        await self._stop_resubscribing()
        try:
            await self._consume()
        except Exception:
            log.warning("consuming %s again after a reopen failed", self._queue, exc_info=True)
            self._resubscribe_later()
        else:
            log.info("consuming %s again on a new channel", self._queue)

    def _on_broker_cancel(self, frame: spec.Basic.Cancel) -> None:
        if self._current is None or frame.consumer_tag != self._current[1]:
            return
        log.warning("the broker cancelled the consumer of %s", self._queue)
        self._current = None
        self._resubscribe_later()

    def _resubscribe_later(self) -> None:
        if self._cancelled or (self._resubscriber is not None and not self._resubscriber.done()):
            return
        self._resubscriber = asyncio.create_task(
            self._resubscribe(), name=f"resubscribe {self._queue}"
        )

    async def _resubscribe(self) -> None:
        delay = self._retry_after_s
        while not self._cancelled and self._current is None:
            await asyncio.sleep(delay)
            if self._cancelled or self._current is not None:
                return  # a reopen consumed again meanwhile
            try:
                await self._probe()
                if self._cancelled or self._current is not None:
                    return
                await self._consume()
            except Exception as exc:  # the broker or the connection: try again later
                log.warning("consuming %s again failed: %r", self._queue, exc)
                delay = min(delay * 2, self._retry_max_s)
            else:
                log.info("consuming %s again", self._queue)

    async def _probe(self) -> None:
        # On a channel of its own: a missing queue closes the channel that asks.
        channel = await self._channel.get_underlay_channel()
        probe = await channel.connection.channel(publisher_confirms=False)
        try:
            await probe.queue_declare(self._queue, passive=True, timeout=5)
        finally:
            if not probe.is_closed:
                await probe.close()
