"""The publish seam: hand a message to RabbitMQ and return only once the broker confirmed it.

`AmqpPublisher` publishes persistent + mandatory on a small pool of confirm channels. No
lock is held across publish-and-confirm: every request's confirm is in flight at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from pamqp import commands as spec

from gateway.errors import (
    BrokerUnavailable,
    ExchangeNotFound,
    Nacked,
    PublishTimeout,
    Unroutable,
)
from hareway.wire import PERSISTENT, broker_exchange_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    content_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    priority: int | None = None
    expiration_ms: int | None = None
    app_id: str | None = None

    def properties(self) -> spec.Basic.Properties:
        return spec.Basic.Properties(
            content_type=self.content_type,
            delivery_mode=PERSISTENT,
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            priority=self.priority,
            expiration=None if self.expiration_ms is None else str(self.expiration_ms),
            headers=self.headers or None,
            timestamp=datetime.now(UTC),
            app_id=self.app_id,
        )


class Publisher(Protocol):
    @property
    def ready(self) -> bool:
        """Whether a publish now can reach the broker."""
        ...

    async def publish(self, message: Outgoing) -> None:
        """Return once the broker confirmed `message`; raise a `GatewayError` otherwise."""
        ...

    async def close(self) -> None: ...


class AmqpPublisher:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        channels: list[AbstractRobustChannel],
        *,
        timeout_s: float,
        exchange_cache_ttl_s: float,
    ) -> None:
        self._connection = connection
        self._channels = channels
        self._next_channel = itertools.cycle(channels)
        self._timeout_s = timeout_s
        self._exchanges = _KnownExchanges(connection, exchange_cache_ttl_s)

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        *,
        channels: int,
        timeout_s: float,
        exchange_cache_ttl_s: float,
    ) -> AmqpPublisher:
        pool: list[AbstractRobustChannel] = []
        for _ in range(channels):
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            pool.append(channel)
        return cls(connection, pool, timeout_s=timeout_s, exchange_cache_ttl_s=exchange_cache_ttl_s)

    @property
    def ready(self) -> bool:
        return (
            not self._connection.is_closed
            and self._connection.connected.is_set()
            and any(not channel.is_closed for channel in self._channels)
        )

    async def publish(self, message: Outgoing) -> None:
        if not self.ready:
            raise BrokerUnavailable("the broker connection is down; retry later")
        exchange = broker_exchange_name(message.exchange)
        try:
            async with asyncio.timeout(self._timeout_s):
                if exchange:
                    await self._exchanges.ensure(exchange)
                channel = await self._open_channel()
                confirmation = await channel.basic_publish(
                    message.body,
                    exchange=exchange,
                    routing_key=message.routing_key,
                    properties=message.properties(),
                    mandatory=True,
                )
        except TimeoutError:
            raise PublishTimeout(
                f"no confirm within {self._timeout_s:g}s; the message may or may not be "
                "queued, so retry with the same message_id"
            ) from None
        except aiormq.exceptions.PublishError:
            raise Unroutable(
                f"exchange {message.exchange!r} routes {message.routing_key!r} to no queue"
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._exchanges.forget(exchange)
            raise ExchangeNotFound(f"no exchange {message.exchange!r}") from None
        except aiormq.exceptions.DeliveryError as exc:
            raise Nacked(f"the broker nacked the message: {exc}") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"the broker connection failed: {exc!r}") from None
        if not isinstance(confirmation, spec.Basic.Ack):
            raise Nacked(f"the broker did not ack the message: {confirmation!r}")

    async def _open_channel(self) -> aiormq.abc.AbstractChannel:
        for _ in range(len(self._channels)):
            channel = next(self._next_channel)
            if not channel.is_closed:
                return await channel.get_underlay_channel()
        raise BrokerUnavailable("no publish channel is open; retry later")

    async def close(self) -> None:
        await self._connection.close()


class _KnownExchanges:
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
