"""The confirm channels publishes share, each replaced when the broker stops taking what
it sends there.

On a quorum queue whose leader died, RabbitMQ 3.10 keeps nacking a channel that published
within moments of the death until that node returns, while a channel opened a little later
on the same connection is acked at once; a channel can also simply stop confirming. So a
channel whose publishes all came back nacked or unconfirmed is replaced by a new one (and
that one again, after a growing pause, if it fails too), while new publishes go to the
other channels. A run of such failures with no confirm between them makes the pool
unhealthy (`/readyz` 503, so a load balancer sends the traffic elsewhere) until a publish
is confirmed again, or `recheck_s` passed without a failure: a gateway that no longer gets
traffic must be able to get some to prove itself.

A nack can also be the broker's answer for one full queue (`x-overflow: reject-publish`):
publishes avoid a slot being replaced but fall back to it when every slot is, and the
pauses between replacements of one slot grow, so a caller who fills a queue costs a
channel open now and then, never another caller's channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import cast

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from gateway.errors import BrokerUnavailable
from hareway.amqp import check_channel
from hareway.amqp.framing import ChannelWriter

log = logging.getLogger(__name__)

# Failed publish calls in a row, with no confirm between them, that make the pool unhealthy.
UNHEALTHY_AFTER = 3
# Pause before trying a replacement again after it failed, doubling up to the last.
_REPLACE_PAUSES_S = (0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass
class Slot:
    index: int
    channel: AbstractRobustChannel
    writer: ChannelWriter | None = None
    replacements: int = 0
    replacing: asyncio.Task[None] | None = field(default=None, repr=False)


class ChannelPool:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        channels: list[AbstractRobustChannel],
        *,
        timeout_s: float,
        recheck_s: float = 5.0,
    ) -> None:
        self._connection = connection
        self._slots = [Slot(index, channel) for index, channel in enumerate(channels)]
        self._next = 0
        self._timeout_s = timeout_s
        self._recheck_s = recheck_s
        self._failures_in_a_row = 0
        self._last_failure = 0.0
        self._retiring: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, size: int, *, timeout_s: float
    ) -> ChannelPool:
        channels = [await _open_channel(connection) for _ in range(size)]
        return cls(connection, channels, timeout_s=timeout_s)

    @property
    def any_open(self) -> bool:
        return any(not slot.channel.is_closed for slot in self._slots)

    @property
    def healthy(self) -> bool:
        if self._failures_in_a_row < UNHEALTHY_AFTER:
            return True
        return time.monotonic() - self._last_failure >= self._recheck_s

    def ready_writer(self) -> Slot | None:
        """What `writer` would return, when that needs no wait (its writer is on the
        channel's open aiormq channel); else None, and `writer` takes its time."""
        slot = self._pick()
        writer = slot.writer
        if writer is not None and not writer.channel.is_closed:
            return slot
        return None

    async def writer(self) -> Slot:
        """The next open channel, with its writer: one not being replaced if there is one.

        A slot being replaced serves on its old channel until the new one is open only
        when every slot is: replacing never leaves a caller without a channel.
        """
        return await self._with_writer(self._pick())

    def _pick(self) -> Slot:
        count = len(self._slots)
        fallback: Slot | None = None
        for _ in range(count):
            slot = self._slots[self._next]
            self._next = (self._next + 1) % count
            if slot.channel.is_closed:
                continue
            if slot.replacing is None:
                return slot
            fallback = fallback or slot
        if fallback is not None:
            return fallback
        raise BrokerUnavailable("no publish channel is open; retry later")

    async def _with_writer(self, slot: Slot) -> Slot:
        # aio-pika opens aiormq channels; a robust channel gets a new one on reconnect.
        underlay = cast(aiormq.Channel, await slot.channel.get_underlay_channel())
        if slot.writer is None or slot.writer.channel is not underlay:
            slot.writer = ChannelWriter(underlay)
        return slot

    def report(self, slot: Slot, confirmed: int, failed: int) -> None:
        """What the broker made of one publish call's messages on `slot`'s channel."""
        if confirmed:
            self._failures_in_a_row = 0
            slot.replacements = 0
            return
        if not failed:
            return
        self._failures_in_a_row += 1
        self._last_failure = time.monotonic()
        if slot.replacing is None:
            slot.replacing = asyncio.ensure_future(self._replace(slot))

    async def _replace(self, slot: Slot) -> None:
        old = slot.channel
        pause = _REPLACE_PAUSES_S[min(slot.replacements, len(_REPLACE_PAUSES_S) - 1)]
        slot.replacements += 1
        try:
            await asyncio.sleep(pause)
            while True:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        slot.channel = await _open_channel(self._connection)
                except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
                    log.warning(
                        "could not open a channel to replace publish channel %d", slot.index
                    )
                    await asyncio.sleep(_REPLACE_PAUSES_S[-1])
                    continue
                break
            slot.writer = None
            log.warning(
                "publish channel %d was nacked or left unconfirmed: replaced (%d in a row)",
                slot.index,
                slot.replacements,
            )
        finally:
            slot.replacing = None
        # Confirms still in flight on the old channel get their time before it closes.
        retiring = asyncio.ensure_future(self._retire(old))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def _retire(self, channel: AbstractRobustChannel) -> None:
        await asyncio.sleep(self._timeout_s)
        with contextlib.suppress(Exception):
            await channel.close()

    async def close(self) -> None:
        for slot in self._slots:
            if slot.replacing is not None:
                slot.replacing.cancel()
        for task in list(self._retiring):
            task.cancel()


async def _open_channel(connection: AbstractRobustConnection) -> AbstractRobustChannel:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    check_channel(await channel.get_underlay_channel())
    return channel
