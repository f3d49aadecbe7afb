"""One batch, one transaction: run the handler per message, store the rows, sort outcomes.

Each handler call runs in a savepoint, so a message whose handler raises takes its own
writes back with it while the rest of the batch commits. Which messages go to a retry or
to the dead letters is decided here; sending them there is the worker's job, after commit.

A commit the store refuses for its data (see `hareway.store.faults`: a NUL in a text
column, a value too long, a broken constraint) is narrowed down to the messages that
cause it by committing each half on its own, down to single messages. Those go to the
retry ladder (when a handler ran: its writes may succeed later) or to the dead letters
with the database's words; everything else commits. So no single message can stall its
queue, and `StoreUnavailable` means what it says: the store takes nothing right now.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiormq.abc import DeliveredMessage

from consumers.decode import Decoded
from consumers.errors import DeadLetter, StoreRefused, StoreUnavailable
from consumers.handlers import Registration
from consumers.message import Message
from hareway.store import DeliveryRecord, Inbox, Transaction
from hareway.store.faults import Fault, classify, describe
from hareway.store.records import RetryRecord, utcnow
from hareway.tracing import OFF, Tracing
from hareway.wire import printable, short_string_problem

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Item:
    decoded: Decoded
    message: DeliveredMessage
    # When it arrived (monotonic clock): a batch commits once its oldest waited long enough.
    arrived: float = 0.0
    # Its consumer span while tracing is on (hareway/tracing.py), else None.
    span: Any = None


@dataclass(slots=True)
class Failure:
    item: Item
    error: str
    # None: to the dead letters; else the delay before the next attempt.
    delay_ms: int | None


@dataclass(slots=True)
class Outcome:
    stored: int = 0
    failures: list[Failure] = field(default_factory=list)
    # Messages whose id the queue had stored for another body: kept, not dropped.
    conflicts: list[DeliveryRecord] = field(default_factory=list)
    # Transactions it took: more than one when the store refused some of the data.
    commits: int = 0
    # Deliveries of messages the queue had stored already with the same body: no new row.
    duplicates: int = 0


class BatchProcessor:
    def __init__(
        self,
        store: Inbox,
        queue: str,
        handler: Registration | None,
        delay_ms: Callable[[int], int | None],
        *,
        handler_seconds: Any = None,
        tracing: Tracing = OFF,
    ) -> None:
        self._store = store
        self._queue = queue
        self._handler = handler
        self._delay_ms = delay_ms
        # A prometheus Histogram child, or None (hareway_consumer_handler_seconds).
        self._handler_seconds = handler_seconds
        self._tracing = tracing

    async def process(self, items: list[Item]) -> Outcome:
        """Commit the batch, less what the store refuses for its data; raises
        `StoreUnavailable` when the store is out."""
        outcome = Outcome()
        await self._commit(items, outcome)
        return outcome

    async def _commit(self, items: list[Item], outcome: Outcome) -> None:
        # StoreUnavailable goes up; an error from code, not the data, too: the worker
        # keeps the deliveries and says so.
        try:
            await self._commit_once(items, outcome)
        except StoreRefused as exc:
            if len(items) > 1:
                middle = len(items) // 2
                await self._commit(items[:middle], outcome)
                await self._commit(items[middle:], outcome)
                return
            await self._refuse(items[0], str(exc), outcome)

    async def _commit_once(self, items: list[Item], outcome: Outcome) -> None:
        """One transaction for `items`; adds to `outcome` only once it has committed."""
        part = Outcome()
        healthy: list[Item] = []
        for item in items:
            if item.decoded.poison is not None:
                # It can never succeed: no retry can change the bytes.
                part.failures.append(Failure(item, item.decoded.poison, None))
            else:
                healthy.append(item)
        async with self._store.transaction() as tx:
            if self._handler is None:
                succeeded = healthy
            else:
                succeeded = await self._run_handler(tx, self._handler, healthy, part)
            rows = [item.decoded.record for item in succeeded]
            rows += [_dead(failure) for failure in part.failures if failure.delay_ms is None]
            # Stamped as the rows go in, not when the messages arrived: a batch's wait
            # and its handlers' time are part of getting a message stored.
            stamp = utcnow()
            written = await tx.write(rows, stamp)
            # On the ladder from now on, as `GET /v1/messages/{id}` tells: in this same
            # transaction, so before the ack, and before the message is on its delay queue.
            retrying = [_retrying(f, stamp) for f in part.failures if f.delay_ms is not None]
            if retrying:
                await tx.retrying(retrying)
        part.conflicts = written
        outcome.stored += (
            len(succeeded) - sum(c.status == "persisted" for c in written) - written.duplicates
        )
        outcome.duplicates += written.duplicates
        outcome.failures += part.failures
        outcome.conflicts += part.conflicts
        outcome.commits += 1

    async def _refuse(self, item: Item, reason: str, outcome: Outcome) -> None:
        """The store refused this one message: retry it, or keep it as a dead letter."""
        # One message refused could also be a store that refuses everything (a table gone):
        # then it is an outage, and no message is dead-lettered for it.
        await self._store.probe()
        record = item.decoded.record
        error = f"the store refused it: {reason}"
        if item.decoded.poison is not None:
            error = f"{item.decoded.poison}; {error}"
        # Values the store refuses stay the same on every retry; a handler's writes may not.
        retry = self._handler is not None and item.decoded.poison is None and _storable(record)
        delay_ms = self._delay_ms(record.attempts) if retry else None
        log.warning("%s refused %r: %s", self._queue, record.message_id, reason)
        if delay_ms is None:
            await self.keep_dead_letter(item, error)
        outcome.failures.append(Failure(item, error, delay_ms))

    async def keep_dead_letter(self, item: Item, error: str) -> None:
        """Store the dead letter in the first form the store takes: as it came, then with
        its names made printable, then without its headers too (the message itself, byte
        for byte, is in the dead-letter queue when the queue has a ladder)."""
        dead = dataclasses.replace(item.decoded.record, status="dead_lettered", last_error=error)
        forms = [dead, _printable(dead), dataclasses.replace(_printable(dead), headers={})]
        for form in forms:
            try:
                async with self._store.transaction() as tx:
                    await tx.write([form], utcnow())
            except StoreRefused as exc:
                log.warning("%s: the store refused a dead letter: %s", self._queue, exc)
                continue
            return
        raise StoreUnavailable(f"the store refuses even the printable dead letter: {error}")

    async def _call(self, handler: Registration, item: Item, tx: Transaction) -> None:
        """One handler call in its savepoint, timed, and traced while tracing is on."""
        span = None
        if self._tracing.enabled:
            span = self._tracing.start(f"{self._queue} handler", "internal", item.span)
        began = time.perf_counter()
        try:
            async with tx.savepoint():
                await handler(_message(item.decoded), tx.handler_tx)
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc)
            raise
        finally:
            if self._handler_seconds is not None:
                self._handler_seconds.observe(time.perf_counter() - began)
            if span is not None:
                span.end()

    async def _run_handler(
        self, tx: Transaction, handler: Registration, items: list[Item], outcome: Outcome
    ) -> list[Item]:
        ids = {item.decoded.record.message_id for item in items}
        stored_before = await tx.persisted(self._queue, ids)
        # This batch's ids whose handler ran, and whether it succeeded.
        ran: dict[str, bool] = {}
        succeeded: list[Item] = []
        for item in items:
            record = item.decoded.record
            if record.message_id in stored_before or ran.get(record.message_id):
                # Stored before (a redelivery, or a duplicate earlier in this batch): its
                # effects are committed already, so the handler must not run again. Its row
                # still goes to the store, which skips a repeat (a duplicate) and keeps
                # another body as a conflict.
                succeeded.append(item)
                continue
            if record.message_id in ran:
                continue  # its first copy failed and is on its way down the ladder
            ran[record.message_id] = False
            try:
                await self._call(handler, item, tx)
            except DeadLetter as exc:
                outcome.failures.append(Failure(item, str(exc), None))
            except Exception as exc:
                # The handler's own SQL failing (a missing table, a constraint) is the
                # handler failing; only the store being out stops the batch.
                if classify(exc) is Fault.OUTAGE:
                    raise StoreUnavailable(describe(exc)) from exc
                error = f"{type(exc).__name__}: {exc}"
                outcome.failures.append(Failure(item, error, self._delay_ms(record.attempts)))
            else:
                ran[record.message_id] = True
                succeeded.append(item)
        return succeeded


def _storable(record: DeliveryRecord) -> bool:
    names = (record.message_id, record.exchange, record.routing_key, record.content_type or "")
    return all(short_string_problem(name) is None for name in names)


def _printable(record: DeliveryRecord) -> DeliveryRecord:
    """The record with every name a store keeps as text escaped and cut to fit."""
    return dataclasses.replace(
        record,
        message_id=printable(record.message_id),
        exchange=printable(record.exchange),
        routing_key=printable(record.routing_key),
        content_type=None if record.content_type is None else printable(record.content_type),
        content_encoding=(
            None if record.content_encoding is None else printable(record.content_encoding)
        ),
    )


def _message(decoded: Decoded) -> Message:
    record = decoded.record
    return Message(
        message_id=record.message_id,
        queue=record.queue,
        exchange=record.exchange,
        routing_key=record.routing_key,
        headers=record.headers,
        content_type=record.content_type,
        body=record.body,
        payload=decoded.payload,
        attempts=record.attempts,
        published_at=record.published_at,
    )


def _dead(failure: Failure) -> DeliveryRecord:
    return dataclasses.replace(
        failure.item.decoded.record, status="dead_lettered", last_error=failure.error
    )


def _retrying(failure: Failure, now: datetime) -> RetryRecord:
    record = failure.item.decoded.record
    assert failure.delay_ms is not None
    return RetryRecord(
        queue=record.queue,
        message_id=record.message_id,
        exchange=record.exchange,
        routing_key=record.routing_key,
        attempts=record.attempts,
        last_error=failure.error,
        next_attempt_at=now + timedelta(milliseconds=failure.delay_ms),
        updated_at=now,
    )
