"""What the publisher knows of the exchanges on the broker, learnt off the shared channels.

A publish the broker refuses closes the channel it came on, and with it every confirm in
flight there: other callers' messages. The broker refuses a publish to an exchange that
does not exist (404) and to one it will not let the gateway publish to, being internal
or without write permission for the gateway's user (403). So, before an exchange's
messages go out on the shared channels:

- it is looked up (a passive declare), then trusted to exist for `ttl_s`; one found
  missing or refused is remembered so for `missing_ttl_s` (at most `_REMEMBERED` names),
  and answered at once;
- its first publish goes out alone, on a channel of its own (a trial): only once the
  broker took a message there do its publishes join the shared channels.

Lookups and trials run on a connection of their own, so even a broker that closes that
whole connection cannot touch the publishes in flight. Its channels get numbers that
count up rather than aiormq's lowest free one: aiormq frees the number of a channel the
broker closed before it has answered the close, and a new channel opened under that
number in between makes RabbitMQ close the connection ("second 'channel.open' seen").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import cast

import aiormq
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import ConfirmationFrameType

from gateway.errors import BrokerUnavailable, ExchangeForbidden, ExchangeNotFound, GatewayError
from hareway.amqp.framing import ChannelWriter

# Names remembered as missing or refused; beyond it the oldest are forgotten.
_REMEMBERED = 10_000
# Passive declares in flight at once: enough for a burst, not a flood on the broker.
_CONCURRENT_LOOKUPS = 8
# RabbitMQ's default channel_max; used when the broker names none.
_CHANNEL_MAX = 2047


@dataclass
class Trial:
    """The first publish to an exchange, on a channel of its own."""

    exchange: str
    writer: ChannelWriter
    # Whether the broker took a message there; requests that wait for the trial wait on it.
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class KnownExchanges:
    def __init__(
        self, connection: AbstractRobustConnection, ttl_s: float, missing_ttl_s: float
    ) -> None:
        self._connection = connection
        self._ttl_s = ttl_s
        self._missing_ttl_s = missing_ttl_s
        self._seen: dict[str, float] = {}
        self._trusted: set[str] = set()
        # name -> (when it stops being remembered, the error to answer)
        self._refused: OrderedDict[str, tuple[float, GatewayError]] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[None]] = {}
        self._trials: dict[str, Trial] = {}
        self._lookup_slots = asyncio.Semaphore(_CONCURRENT_LOOKUPS)
        self._idle: list[aiormq.abc.AbstractChannel] = []
        self._next_number = 0
        self._closing: set[asyncio.Task[None]] = set()

    def known(self, name: str) -> bool:
        """Whether `ensure(name)` would return at once: seen within its time to live."""
        seen_at = self._seen.get(name)
        return seen_at is not None and time.monotonic() - seen_at < self._ttl_s

    async def ensure(self, name: str) -> None:
        """Return once `name` is known to exist; raise `ExchangeNotFound`,
        `ExchangeForbidden` or `BrokerUnavailable`."""
        if self.known(name):
            return
        now = time.monotonic()
        self._raise_if_refused(name, now)
        lookup = self._lookups.get(name)
        if lookup is None:
            # Concurrent requests for the same unknown exchange share one lookup.
            lookup = asyncio.ensure_future(self._look_up(name))
            self._lookups[name] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(name, None))
        await asyncio.shield(lookup)

    def is_trusted(self, name: str) -> bool:
        return not name or name in self._trusted

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    def refuse(self, name: str, error: GatewayError) -> None:
        """The broker refused a publish to `name` on a shared channel: stop sending there."""
        self._seen.pop(name, None)
        self._trusted.discard(name)
        self._remember_refused(name, error)

    async def begin_trial(self, name: str) -> Trial | None:
        """A channel for the first publish to `name`, or None once it is trusted.

        Requests that arrive during a trial wait for it: if the broker took its message
        they go to the shared channels, if it refused the exchange they are refused too.
        """
        while True:
            running = self._trials.get(name)
            if running is None:
                break
            await asyncio.shield(running.done)
            if self.is_trusted(name):
                return None
            self._raise_if_refused(name, time.monotonic())
        channel = await self._open(publisher_confirms=True)
        trial = Trial(name, ChannelWriter(cast(aiormq.Channel, channel)))
        self._trials[name] = trial
        return trial

    def end_trial(
        self, trial: Trial, confirmations: list[asyncio.Future[ConfirmationFrameType]]
    ) -> None:
        """Judge the trial by its confirms and retire its channel."""
        taken = any(
            future.done() and not future.cancelled() and _reached_exchange(future)
            for future in confirmations
        )
        if taken:
            self._trusted.add(trial.exchange)
        self._trials.pop(trial.exchange, None)
        if not trial.done.done():
            trial.done.set_result(taken)
        self._close_later(trial.writer.channel)

    async def _look_up(self, name: str) -> None:
        async with self._lookup_slots:
            channel = await self._lookup_channel()
            try:
                await channel.exchange_declare(exchange=name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                # The broker closed the channel with its answer; the next lookup opens one.
                error: GatewayError = ExchangeNotFound(f"no exchange {name!r}")
                self._remember_refused(name, error)
                raise error from None
            except aiormq.exceptions.ChannelAccessRefused as exc:
                error = ExchangeForbidden(f"the broker refuses exchange {name!r}: {exc}")
                self._remember_refused(name, error)
                raise error from None
            except BaseException:
                self._close_later(channel)  # in an unknown state (a timeout, say)
                raise
            self._idle.append(channel)
        self._seen[name] = time.monotonic()

    async def queue_counts(self, name: str) -> tuple[int | None, int | None] | None:
        """A passive declare of queue `name` on a lookup channel: the broker closes that
        channel when the queue is missing, never a shared one (the read routes' 404).
        Its ready messages and consumers; None when it is missing, counts of None when the
        gateway's user may not see into it."""
        async with self._lookup_slots:
            channel = await self._lookup_channel()
            try:
                declared = await channel.queue_declare(queue=name, passive=True)
            except ValueError:
                # pamqp refuses the name before sending: no queue can be called that.
                self._idle.append(channel)
                return None
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            except aiormq.exceptions.ChannelAccessRefused:
                return None, None  # it exists; the gateway's user may not see into it
            except BaseException:
                self._close_later(channel)
                raise
            self._idle.append(channel)
            return declared.message_count, declared.consumer_count

    async def queue_exists(self, name: str) -> bool:
        return await self.queue_counts(name) is not None

    async def _lookup_channel(self) -> aiormq.abc.AbstractChannel:
        while self._idle:
            channel = self._idle.pop()
            if not channel.is_closed:
                return channel
        return await self._open(publisher_confirms=False)

    async def _open(self, publisher_confirms: bool) -> aiormq.abc.AbstractChannel:
        transport = self._connection.transport
        if transport is None or self._connection.is_closed:
            raise BrokerUnavailable("the broker connection for exchange lookups is down")
        connection = transport.connection
        channel_max = connection.connection_tune.channel_max or _CHANNEL_MAX
        for _ in range(channel_max):
            self._next_number = self._next_number % channel_max + 1
            if self._next_number not in connection.channels:
                break
        return await connection.channel(
            channel_number=self._next_number, publisher_confirms=publisher_confirms
        )

    def _raise_if_refused(self, name: str, now: float) -> None:
        refused = self._refused.get(name)
        if refused is None:
            return
        until, error = refused
        if now < until:
            raise type(error)(error.detail)
        del self._refused[name]

    def _remember_refused(self, name: str, error: GatewayError) -> None:
        self._refused[name] = (time.monotonic() + self._missing_ttl_s, error)
        self._refused.move_to_end(name)
        while len(self._refused) > _REMEMBERED:
            self._refused.popitem(last=False)

    def _close_later(self, channel: aiormq.abc.AbstractChannel) -> None:
        if channel.is_closed:
            return
        task = asyncio.ensure_future(_close_quietly(channel))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._connection.close()


def _reached_exchange(future: asyncio.Future[ConfirmationFrameType]) -> bool:
    """Whether the broker took the publish (acked, nacked or returned), not refused it."""
    exc = future.exception()
    return exc is None or isinstance(exc, aiormq.exceptions.PublishError)


async def _close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    # A channel nobody uses any more: a failure to close it has nobody to tell.
    with contextlib.suppress(Exception):
        await channel.close()
