"""The publish seam: hand a message to RabbitMQ and return only once the broker confirmed it.

`AmqpPublisher` publishes persistent + mandatory on a small pool of confirm channels. No
lock is held across publish-and-confirm: every request's confirm is in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiormq
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import ConfirmationFrameType
from pamqp import commands as spec

from gateway.channels import ChannelPool, Slot
from gateway.errors import (
    BrokerBlocked,
    BrokerUnavailable,
    ExchangeForbidden,
    ExchangeNotFound,
    GatewayError,
    Nacked,
    Overloaded,
    PublishTimeout,
    Unroutable,
    ValidationFailed,
)
from gateway.exchanges import KnownExchanges, Trial
from hareway.amqp.blocked import is_blocked
from hareway.amqp.framing import ChannelWriter
from hareway.wire import PERSISTENT, broker_exchange_name

log = logging.getLogger(__name__)

# How often the publishes waiting for a confirm are checked for a blocked connection.
_BLOCKED_CHECK_S = 0.1


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
    reply_to: str | None = None
    type: str | None = None
    timestamp: datetime | None = None
    content_encoding: str | None = None

    def properties(self) -> spec.Basic.Properties:
        return spec.Basic.Properties(
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            delivery_mode=PERSISTENT,
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            priority=self.priority,
            expiration=None if self.expiration_ms is None else str(self.expiration_ms),
            headers=self.headers or None,
            timestamp=self.timestamp or datetime.now(UTC),
            message_type=self.type,
            app_id=self.app_id,
        )


@dataclass(frozen=True, slots=True)
class Confirmed:
    """When the message was handed to the channel (perf_counter), to split Server-Timing."""

    sent_at: float


# One result per message of a batch, in order.
BatchResult = Confirmed | GatewayError


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What the broker says of a queue (None: the gateway's user may not see into it)."""

    messages: int | None
    consumers: int | None


class Publisher(Protocol):
    @property
    def ready(self) -> bool:
        """Whether a publish now can reach the broker."""
        ...

    def check_ready(self) -> None:
        """Raise the `BrokerError` a publish now would get: down, blocked."""
        ...

    async def prepare(self, exchange: str) -> None:
        """Raise `ExchangeNotFound` (or a `BrokerError`) before any message goes to `exchange`."""
        ...

    async def publish(self, message: Outgoing) -> Confirmed:
        """Return once the broker confirmed `message`; raise a `GatewayError` otherwise."""
        ...

    async def queue_exists(self, queue: str) -> bool:
        """Whether the broker has queue `queue`; `BrokerUnavailable` when it cannot say."""
        ...

    async def queue_counts(self, queue: str) -> QueueCounts | None:
        """Queue `queue`'s ready messages and consumers on the broker (None: no such queue);
        `BrokerUnavailable` when it cannot say."""
        ...

    async def publish_batch(self, messages: list[Outgoing]) -> list[BatchResult]:
        """Publish all with their confirms in flight together; one result each, in order."""
        ...

    async def close(self) -> None: ...


class AmqpPublisher:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        channels: ChannelPool,
        exchanges: KnownExchanges,
        *,
        timeout_s: float,
        max_in_flight: int,
    ) -> None:
        self._connection = connection
        self._channels = channels
        self._timeout_s = timeout_s
        self._exchanges = exchanges
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        # The timeouts of the publishes waiting for a confirm, cut short when blocked.
        self._deadlines: set[asyncio.Timeout] = set()
        self._watch = asyncio.ensure_future(self._watch_blocked())

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        lookups: AbstractRobustConnection,
        *,
        channels: int,
        timeout_s: float,
        exchange_cache_ttl_s: float,
        exchange_missing_ttl_s: float,
        max_in_flight: int,
    ) -> AmqpPublisher:
        """`connection` carries the publishes; `lookups`, a connection of its own, the
        exchange lookups and first publishes that the broker may refuse (see exchanges.py).
        The publisher owns both and closes them."""
        pool = await ChannelPool.open(connection, channels, timeout_s=timeout_s)
        exchanges = KnownExchanges(lookups, exchange_cache_ttl_s, exchange_missing_ttl_s)
        return cls(connection, pool, exchanges, timeout_s=timeout_s, max_in_flight=max_in_flight)

    @property
    def ready(self) -> bool:
        return (
            not self._connection.is_closed
            and self._connection.connected.is_set()
            and self._channels.any_open
            and self._channels.healthy
            and not self.blocked
        )

    @property
    def blocked(self) -> bool:
        transport = self._connection.transport
        return transport is not None and is_blocked(transport.connection)

    def check_ready(self) -> None:
        # Called on every publish: an all-channels-closed pool is left to `_writer`.
        connection = self._connection
        if connection.is_closed or not connection.connected.is_set():
            raise BrokerUnavailable("the broker connection is down; retry later")
        if self.blocked:
            raise BrokerBlocked("the broker blocks publishers (memory or disk alarm); retry later")

    async def prepare(self, exchange: str) -> None:
        self.check_ready()
        name = broker_exchange_name(exchange)
        if not name:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._exchanges.ensure(name)
        except TimeoutError:
            raise BrokerUnavailable(f"exchange {exchange!r} lookup timed out") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"the broker connection failed: {exc!r}") from None

    async def publish(self, message: Outgoing) -> Confirmed:
        # publish_batch's steps, one coroutine fewer on the single publish.
        self.check_ready()
        self._take_slots(1)
        try:
            (result,) = await self._send([message])
        finally:
            self._in_flight -= 1
        if isinstance(result, GatewayError):
            raise result
        return result

    async def queue_exists(self, queue: str) -> bool:
        return await self.queue_counts(queue) is not None

    async def queue_counts(self, queue: str) -> QueueCounts | None:
        self.check_ready()
        try:
            async with asyncio.timeout(self._timeout_s):
                counts = await self._exchanges.queue_counts(queue)
                return None if counts is None else QueueCounts(*counts)
        except TimeoutError:
            raise BrokerUnavailable(f"queue {queue!r} lookup timed out") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"the broker connection failed: {exc!r}") from None

    async def publish_batch(self, messages: list[Outgoing]) -> list[BatchResult]:
        self.check_ready()
        self._take_slots(len(messages))
        try:
            return await self._send(messages)
        finally:
            self._in_flight -= len(messages)

    def _take_slots(self, count: int) -> None:
        # Refuse at once rather than queue: a client can retry elsewhere, a queue only grows.
        if self._in_flight + count > self._max_in_flight:
            raise Overloaded(
                f"{self._in_flight} publishes are in flight (limit {self._max_in_flight}); "
                "retry later"
            )
        self._in_flight += count

    async def _send(self, messages: list[Outgoing]) -> list[BatchResult]:
        """Send all on one channel in one write, then wait for their confirms together.

        One deadline covers the whole call: a batch is answered within the timeout, not
        within the timeout per message.
        """
        confirmations: list[asyncio.Future[ConfirmationFrameType]] = []
        failure: GatewayError | None = None
        sent_at = time.perf_counter()
        trial: Trial | None = None
        slot: Slot | None = None
        try:
            async with asyncio.timeout(self._timeout_s) as deadline:
                self._deadlines.add(deadline)
                try:
                    exchanges = {broker_exchange_name(m.exchange) for m in messages}
                    for exchange in exchanges:
                        # Checked before the call: a coroutine costs even when it returns at once.
                        if exchange and not self._exchanges.known(exchange):
                            await self._exchanges.ensure(exchange)
                    untrusted = [e for e in exchanges if not self._exchanges.is_trusted(e)]
                    if untrusted:
                        # Calls with several exchanges (redrive) send one at a time.
                        trial = await self._exchanges.begin_trial(untrusted[0])
                    if trial is not None:
                        writer = trial.writer
                    else:
                        slot = self._channels.ready_writer() or await self._channels.writer()
                        writer = cast(ChannelWriter, slot.writer)
                    sent_at = time.perf_counter()
                    for message in messages:
                        confirmations.append(_send_one(writer, message))
                    await _settled(confirmations)
                finally:
                    self._deadlines.discard(deadline)
                    if trial is not None:
                        self._exchanges.end_trial(trial, confirmations)
        except TimeoutError:
            failure = self._timed_out()
        except GatewayError as exc:
            failure = exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            failure = BrokerUnavailable(f"the broker connection failed: {exc!r}")
        results: list[BatchResult] = []
        for index, message in enumerate(messages):
            if index < len(confirmations) and confirmations[index].done():
                results.append(self._outcome(confirmations[index], message, sent_at))
                continue
            if index < len(confirmations):
                # Its confirm may still come; nobody waits for it any more.
                confirmations[index].cancel()
            assert failure is not None, "an unconfirmed publish without a failure"
            results.append(failure)
        if slot is not None:
            confirmed = sum(isinstance(result, Confirmed) for result in results)
            failed = sum(isinstance(result, Nacked | PublishTimeout) for result in results)
            self._channels.report(slot, confirmed, failed)
        return results

    def _timed_out(self) -> GatewayError:
        if self.blocked:
            return BrokerBlocked(
                "the broker blocked publishers (memory or disk alarm) before it "
                "confirmed; the outcome is unknown, so retry with the same message_id"
            )
        return PublishTimeout(
            f"no confirm within {self._timeout_s:g}s; the message may or may not be "
            "queued, so retry with the same message_id"
        )

    def _outcome(
        self,
        confirmation: asyncio.Future[ConfirmationFrameType],
        message: Outgoing,
        sent_at: float,
    ) -> BatchResult:
        if confirmation.cancelled():
            return BrokerUnavailable("the publish was cancelled by a closing connection")
        exc = confirmation.exception()
        if exc is None:
            if isinstance(confirmation.result(), spec.Basic.Ack):
                return Confirmed(sent_at)
            return Nacked(f"the broker did not ack the message: {confirmation.result()!r}")
        if isinstance(exc, aiormq.exceptions.PublishError):
            return Unroutable(
                f"exchange {message.exchange!r} routes {message.routing_key!r} to no queue"
            )
        if isinstance(exc, _Unencodable):
            return ValidationFailed(
                f"the message cannot be encoded for AMQP: {exc.__cause__}",
                errors=[{"field": "", "message": str(exc.__cause__), "type": "amqp_encoding"}],
            )
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            self._exchanges.forget(broker_exchange_name(message.exchange))
            return ExchangeNotFound(f"no exchange {message.exchange!r}")
        if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
            refused = ExchangeForbidden(
                f"the broker refuses publishes to exchange {message.exchange!r} "
                f"(internal, or no write permission): {exc}"
            )
            self._exchanges.refuse(broker_exchange_name(message.exchange), refused)
            return refused
        if isinstance(exc, aiormq.exceptions.DeliveryError):
            return Nacked(f"the broker nacked the message: {exc}")
        if isinstance(exc, aiormq.exceptions.AMQPError | ConnectionError | RuntimeError):
            return BrokerUnavailable(f"the broker connection failed: {exc!r}")
        raise exc

    async def _watch_blocked(self) -> None:
        """End the waits of publishes in flight as soon as the broker blocks the connection.

        A blocked connection holds them unconfirmed until the alarm clears; waiting out
        the timeout would only make each client wait longer for the same 503. One watcher
        for all publishes keeps the hot path free of a task or a timer of its own.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_BLOCKED_CHECK_S)
            if self._deadlines and self.blocked:
                for deadline in list(self._deadlines):
                    deadline.reschedule(loop.time())

    async def close(self) -> None:
        self._watch.cancel()
        await self._channels.close()
        await self._exchanges.close()
        await self._connection.close()


class _Unencodable(Exception):
    """pamqp could not marshal one message (a value AMQP has no encoding for)."""


def _send_one(writer: ChannelWriter, message: Outgoing) -> asyncio.Future[ConfirmationFrameType]:
    try:
        return writer.send(
            broker_exchange_name(message.exchange),
            message.routing_key,
            message.properties(),
            message.body,
        )
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        # Raised before anything was queued: this message fails alone, never the batch.
        failed: asyncio.Future[ConfirmationFrameType] = asyncio.get_running_loop().create_future()
        unencodable = _Unencodable()
        unencodable.__cause__ = exc
        failed.set_exception(unencodable)
        return failed


async def _settled(futures: list[asyncio.Future[ConfirmationFrameType]]) -> None:
    """Wait until every future is done, whatever its outcome; cheaper than `asyncio.wait`."""
    for future in futures:
        if future.done():
            continue
        try:
            await future
        except asyncio.CancelledError:
            # Only this task's own cancellation (a deadline) stops the wait.
            if _task_is_cancelling():
                raise
        except Exception:  # an outcome, read from the future by the caller
            pass


def _task_is_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
