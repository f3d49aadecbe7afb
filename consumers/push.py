"""Delivering a queue's stored messages to its push subscription (docs/push.md).

The worker commits a batch as for any queue, then hands the messages that committed to
`Pusher.deliver`: it POSTs each one (at most `concurrency` in flight; one at a time, in
the queue's order, for 1), keeps every outcome in the store, and answers which messages
go down the retry ladder or to the dead letters. Only then does the worker publish those
and ack: an ack means the target took the message, or it was handed on, never lost.

A target that keeps failing trips the subscription's breaker (consumers/breaker.py): the
messages that fail from then on are held, unacked, with no attempt spent, and the first
of them probes the target every `breaker.probe_s` until it answers. Meanwhile the queue
takes no more than its prefetch window, and every other queue goes on: each has its own
worker, its own pusher and its own connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from consumers.batch import Failure, Item
from consumers.breaker import Breaker
from consumers.metrics import ConsumerMetrics
from consumers.push_request import push_headers, webhook_id
from consumers.signing import signed_headers
from hareway.store import Inbox, PushRecord, StoreRefused, StoreUnavailable
from hareway.store.records import utcnow
from hareway.subscriptions import SubscriptionSpec, read_secrets
from hareway.topology import RetrySpec
from hareway.tracing import OFF, Tracing
from hareway.wire import printable

log = logging.getLogger(__name__)

# What of an answer is read: enough for an error message, and a small 2xx body is read to
# its end so its connection goes back to the pool.
_READ_BYTES = 64 * 1024
_ERROR_BYTES = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST's outcome."""

    delivered: bool
    # Not delivered: True for the retry ladder, False for the dead letters at once.
    retry: bool = False
    status: int | None = None
    error: str | None = None
    retry_after_ms: int | None = None


@dataclass(slots=True)
class Pushed:
    """What the worker does next: publish `failures`, requeue `held` (the process is
    stopping while the target was out), ack the rest."""

    failures: list[Failure] = field(default_factory=list)
    held: set[int] = field(default_factory=set)


class Pusher:
    def __init__(
        self,
        spec: SubscriptionSpec,
        keys: Sequence[bytes],
        store: Inbox,
        retry: RetrySpec | None,
        metrics: ConsumerMetrics,
        *,
        store_backoff_s: tuple[float, float] = (0.5, 30.0),
        tracing: Tracing = OFF,
    ) -> None:
        self._spec = spec
        self._tracing = tracing
        self._keys = tuple(keys)
        self._url = str(spec.url)
        self._target = httpx.URL(self._url)  # parsed once, not per request
        self._store = store
        self._retry = retry
        self._store_backoff_s = store_backoff_s
        # Connections of its own: a slow target fills only its own subscription's slots.
        # One client per connection, not one client with a pool of `concurrency`: httpcore
        # walks every pooled connection (a poll() each) on each request and answer, so one
        # pool of 16 costs 2.5 times the CPU per request of 16 pools of one
        # (docs/performance.md, "Push subscriptions").
        self._idle: list[httpx.AsyncClient] = []
        self._opened: list[httpx.AsyncClient] = []
        self._tls = httpx.create_ssl_context()  # one, not one per client (certifi's load)
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._breaker = Breaker(spec.queue, spec.breaker.failures)
        self._stopped = asyncio.Event()
        queue = spec.queue
        self._delivered = metrics.push_delivered.labels(queue)
        self._failed = metrics.push_failures
        self._seconds = metrics.push_seconds.labels(queue)
        metrics.push_breaker_open.labels(queue).set_function(lambda: float(self._breaker.open))

    @classmethod
    async def open(
        cls,
        spec: SubscriptionSpec,
        store: Inbox,
        retry: RetrySpec | None,
        metrics: ConsumerMetrics,
        store_backoff_s: tuple[float, float] = (0.5, 30.0),
        tracing: Tracing = OFF,
    ) -> Pusher:
        keys = await asyncio.to_thread(read_secrets, spec)  # a file read: off the loop
        return cls(
            spec, keys, store, retry, metrics, store_backoff_s=store_backoff_s, tracing=tracing
        )

    @property
    def ordered(self) -> bool:
        """Concurrency 1: one POST at a time, in the queue's order, batch after batch."""
        return self._spec.concurrency == 1

    @property
    def paused(self) -> bool:
        """The breaker is open: the target keeps failing."""
        return self._breaker.open

    def stop(self) -> None:
        """Stop probing a target that is out: what is held goes back to the queue."""
        self._stopped.set()

    async def close(self) -> None:
        for client in self._opened:
            await client.aclose()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[httpx.AsyncClient]:
        """An idle client (one keep-alive connection), opened the first time it is needed;
        the slots bound how many are in use at once."""
        if self._idle:
            client = self._idle.pop()
        else:
            client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                # No per-read timeouts: the exchange has one deadline of its own (`_exchange`),
                # and each of httpx's costs a cancel scope per socket operation.
                timeout=None,
                follow_redirects=False,
                verify=self._tls,
            )
            self._opened.append(client)
        try:
            yield client
        finally:
            self._idle.append(client)

    async def deliver(self, items: list[Item]) -> Pushed | None:
        """POST `items` (committed already), record the outcomes; None if the process is
        stopping before they could be recorded (the worker requeues the batch)."""
        answers: dict[int, Attempt] = {}
        pending = items
        held: list[Item] = []
        while pending:
            held = await self._round(pending, answers)
            if not held:
                break
            probed = await self._probe(held, answers)
            if probed is None:
                break  # stopping: what is held goes back to the queue
            pending = held[:probed] + held[probed + 1 :]
            held = []
        pushed = Pushed(held={id(item) for item in held})
        records = self._outcomes(items, answers, pushed)
        if not await self._record(records):
            return None
        return pushed

    async def _round(self, items: list[Item], answers: dict[int, Attempt]) -> list[Item]:
        """Deliver `items` while the breaker is closed; those it holds, in queue order."""
        held: list[Item] = []

        async def one(item: Item) -> None:
            async with self._slots:
                if self._breaker.open:
                    held.append(item)
                    return
                attempt = await self._post(item)
            if attempt.retry and self._breaker.open and self._attempts_left(item):
                # The failure that tripped it, or one in flight then. (One with no attempt
                # left is dead-lettered as usual: holding it would save nothing.)
                held.append(item)
            else:
                answers[id(item)] = attempt

        if self._spec.concurrency == 1:
            for item in items:  # strictly one after the other
                await one(item)
        else:
            await asyncio.gather(*(one(item) for item in items))
            order = {id(item): index for index, item in enumerate(items)}
            held.sort(key=lambda item: order[id(item)])
        return held

    async def _probe(self, held: list[Item], answers: dict[int, Attempt]) -> int | None:
        """Try the held messages in turn, one per probe interval, until the target answers
        one; its index, or None if stopped. In turn: a target that fails one message for
        what it is must not keep the others held."""
        turn = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._spec.breaker.probe_s)
            if self._stopped.is_set():
                return None
            index = turn % len(held)
            attempt = await self._post(held[index])
            if not attempt.retry:
                answers[id(held[index])] = attempt
                return index
            turn += 1

    def _attempts_left(self, item: Item) -> bool:
        return self._delay_ms(item.decoded.record.attempts, None) is not None

    def _outcomes(
        self, items: list[Item], answers: dict[int, Attempt], pushed: Pushed
    ) -> list[PushRecord]:
        records: list[PushRecord] = []
        now = utcnow()
        for item in items:
            attempt = answers.get(id(item))
            if attempt is None:
                continue  # held: back to the queue as it came
            record = item.decoded.record
            done = PushRecord(
                queue=record.queue,
                message_id=record.message_id,
                status="delivered",
                attempts=record.attempts,
                last_status=attempt.status,
                last_error=attempt.error,
                updated_at=now,
            )
            if attempt.delivered:
                records.append(done)
                continue
            error = attempt.error or "push failed"
            delay_ms = self._delay_ms(record.attempts, attempt.retry_after_ms)
            if not attempt.retry or delay_ms is None:
                pushed.failures.append(Failure(item, error, None))
                records.append(dataclasses.replace(done, status="dead_lettered"))
            else:
                pushed.failures.append(Failure(item, error, delay_ms))
                next_at = now + timedelta(milliseconds=delay_ms)
                records.append(
                    dataclasses.replace(done, status="retrying", next_attempt_at=next_at)
                )
        return records

    def _delay_ms(self, attempts: int, retry_after_ms: int | None) -> int | None:
        """The ladder's delay after `attempts`, or None: out of attempts (or no ladder)."""
        if self._retry is None:
            return None
        delay = self._retry.delay_before_next(attempts)
        if delay is None or retry_after_ms is None or retry_after_ms <= delay:
            return delay
        # Only the ladder's own delays have a queue to wait in: the shortest that waits
        # as long as the target asked, else the longest there is.
        longer = sorted(d for d in set(self._retry.delays) if d >= retry_after_ms)
        return longer[0] if longer else max(self._retry.delays)

    async def _record(self, records: list[PushRecord]) -> bool:
        """Keep the outcomes before the ack, holding on while the store is out."""
        backoff, most = self._store_backoff_s
        while True:
            try:
                await self._store.record_pushes(records)
                return True
            except StoreRefused as exc:
                # The data (never seen: every text is made printable); the push happened.
                log.warning("push %s: the store refused the outcomes: %s", self._spec.queue, exc)
                return True
            except StoreUnavailable as exc:
                log.warning(
                    "push %s: cannot record outcomes, trying again in %.1fs: %s",
                    self._spec.queue,
                    backoff,
                    exc,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            if self._stopped.is_set():
                return False
            backoff = min(backoff * 2, most)

    async def _post(self, item: Item) -> Attempt:
        if not self._tracing.enabled:
            return await self._exchange(item, None)
        # A client span per POST, a child of the message's consumer span (which continues
        # the message's own `traceparent`); the request carries the push span's context,
        # so the target's spans hang beneath it.
        record = item.decoded.record
        span = self._tracing.start(
            f"{self._spec.queue} push",
            "client",
            item.span,
            {
                "http.request.method": "POST",
                "url.full": self._url,
                "messaging.message.id": record.message_id,
                "hareway.attempt": record.attempts,
            },
        )
        try:
            attempt = await self._exchange(item, span)
            if attempt.status is not None:
                span.set_attribute("http.response.status_code", attempt.status)
            if not attempt.delivered:
                self._tracing.failed(span, attempt.error or "push failed")
            return attempt
        finally:
            span.end()

    async def _exchange(self, item: Item, span: Any) -> Attempt:
        record = item.decoded.record
        message_id = webhook_id(record)
        headers = push_headers(record, item.message.header.properties, self._spec.headers)
        if span is not None:
            self._tracing.inject(headers, span)
        headers |= signed_headers(self._keys, message_id, int(time.time()), record.body)
        began = time.perf_counter()
        try:
            # One deadline for the whole exchange: httpx's own timeouts are per read, and a
            # target that dribbles its answer would hold the slot for ever.
            async with asyncio.timeout(self._spec.timeout_s):
                async with self._connection() as client:
                    request = client.stream(
                        "POST", self._target, content=record.body, headers=headers
                    )
                    async with request as response:
                        head = await _read_some(response)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed_with("timeout", f"push: no answer within {self._spec.timeout_s:g}s")
        except httpx.HTTPError as exc:
            return self._failed_with("connection", f"push: {type(exc).__name__}: {exc}")
        finally:
            self._seconds.observe(time.perf_counter() - began)
        status = response.status_code
        if 200 <= status < 300:
            self._breaker.answered()
            self._delivered.inc()
            return Attempt(delivered=True, status=status)
        said = printable(head[:_ERROR_BYTES].decode("utf-8", "replace"), _ERROR_BYTES)
        error = f"push: HTTP {status} from the target: {said}" if said else f"push: HTTP {status}"
        self._failed.labels(self._spec.queue, f"{status // 100}xx").inc()
        if status in self._spec.permanent_statuses:
            self._breaker.answered()
            return Attempt(delivered=False, retry=False, status=status, error=error)
        self._breaker.failed(error)
        retry_after = _retry_after_ms(response.headers.get("retry-after"))
        return Attempt(False, True, status, error, retry_after)

    def _failed_with(self, reason: str, error: str) -> Attempt:
        self._failed.labels(self._spec.queue, reason).inc()
        self._breaker.failed(error)
        return Attempt(delivered=False, retry=True, error=error)


async def _read_some(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _READ_BYTES:
            break
    return body


def _retry_after_ms(value: str | None) -> int | None:
    """`Retry-After` in seconds or as an HTTP date (RFC 9110 10.2.3), in milliseconds."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds() * 1000))
