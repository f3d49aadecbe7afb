"""The exchanges the publisher has seen on the broker recently."""

from __future__ import annotations

import asyncio
import time

import aiormq
from aio_pika.abc import AbstractRobustConnection

from gateway.errors import BrokerUnavailable, ExchangeNotFound


class KnownExchanges:
    """Exchanges seen on the broker recently.

    Publishing to a missing exchange makes the broker close the channel, which would fail
    every other confirm in flight on it. So an exchange is looked up (a passive declare on
    a throwaway channel) before its first publish, and again once the entry is stale.
    """

    def __init__(self, connection: AbstractRobustConnection, ttl_s: float) -> None:
        self._connection = connection
        self._ttl_s = ttl_s
        self._seen: dict[str, float] = {}
        self._lookups: dict[str, asyncio.Future[None]] = {}

    async def ensure(self, name: str) -> None:
        seen_at = self._seen.get(name)
        if seen_at is not None and time.monotonic() - seen_at < self._ttl_s:
            return
        lookup = self._lookups.get(name)
        if lookup is None:
            # Concurrent requests for the same unknown exchange share one lookup.
            lookup = asyncio.ensure_future(self._look_up(name))
            self._lookups[name] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(name, None))
        await asyncio.shield(lookup)

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    async def _look_up(self, name: str) -> None:
        # A plain aiormq channel: a robust one would reopen itself after the broker closes it.
        transport = self._connection.transport
        if transport is None:
            raise BrokerUnavailable("the broker connection is down; retry later")
        channel = await transport.connection.channel(publisher_confirms=False)
        try:
            await channel.exchange_declare(exchange=name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ExchangeNotFound(f"no exchange {name!r}") from None
        finally:
            if not channel.is_closed:
                await channel.close()
        self._seen[name] = time.monotonic()
