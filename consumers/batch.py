"""One batch, one transaction: run the handler per message, store the rows, sort outcomes.

Each handler call runs in a savepoint, so a message whose handler raises takes its own
writes back with it while the rest of the batch commits. Which messages go to a retry or
to the dead letters is decided here; sending them there is the worker's job, after commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from aiormq.abc import DeliveredMessage
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.app import Registration
from consumers.decode import Decoded
from consumers.errors import DeadLetter, StoreUnavailable
from consumers.message import Message
from consumers.store import DeliveryRecord, Store
from consumers.store.records import utcnow


@dataclass(slots=True)
class Item:
    decoded: Decoded
    message: DeliveredMessage


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


class BatchProcessor:
    def __init__(
        self,
        store: Store,
        queue: str,
        handler: Registration | None,
        delay_ms: Callable[[int], int | None],
    ) -> None:
        self._store = store
        self._queue = queue
        self._handler = handler
        self._delay_ms = delay_ms

    async def process(self, items: list[Item]) -> Outcome:
        """Commit the batch; raises `StoreUnavailable` when nothing could be committed."""
        outcome = Outcome()
        healthy: list[Item] = []
        for item in items:
            if item.decoded.poison is not None:
                # It can never succeed: no retry can change the bytes.
                outcome.failures.append(Failure(item, item.decoded.poison, None))
            else:
                healthy.append(item)
        async with self._store.transaction() as tx:
            if self._handler is None:
                succeeded = healthy
            else:
                succeeded = await self._run_handler(tx, self._handler, healthy, outcome)
            rows = [item.decoded.record for item in succeeded]
            rows += [_dead(failure) for failure in outcome.failures if failure.delay_ms is None]
            # Stamped as the rows go in, not when the messages arrived: a batch's wait
            # and its handlers' time are part of getting a message stored.
            await self._store.write(tx, rows, utcnow())
        outcome.stored = len(succeeded)
        return outcome

    async def _run_handler(
        self, tx: AsyncConnection, handler: Registration, items: list[Item], outcome: Outcome
    ) -> list[Item]:
        ids = {item.decoded.record.message_id for item in items}
        done = await self._store.persisted(tx, self._queue, ids)
        succeeded: list[Item] = []
        for item in items:
            record = item.decoded.record
            if record.message_id in done:
                # Stored before (a redelivery, or a duplicate earlier in this batch): its
                # effects are committed already, so the handler must not run again.
                continue
            done.add(record.message_id)
            try:
                async with tx.begin_nested():
                    await handler(_message(item.decoded), tx)
            except DeadLetter as exc:
                outcome.failures.append(Failure(item, str(exc), None))
            except Exception as exc:
                if self._store.is_outage(exc):
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
                error = f"{type(exc).__name__}: {exc}"
                outcome.failures.append(Failure(item, error, self._delay_ms(record.attempts)))
            else:
                succeeded.append(item)
        return succeeded


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
