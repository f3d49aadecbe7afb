"""Messages on their queue's retry ladder, in SQL: the `retries` table.

A failed attempt's row goes in with the batch that sent the message down the ladder (its
transaction commits before the ack); the message's next outcome, stored or dead-lettered,
deletes it in its own batch. `GET /v1/messages/{id}` reports a row as `retrying` unless the
queue holds a newer outcome of the message (so a row left behind is never believed over
the message's real state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hareway.store.engine import is_sqlite
from hareway.store.reads import as_utc
from hareway.store.records import Delivery, DeliveryRecord, RetryRecord
from hareway.store.schema import retries

# Keys per DELETE: within every driver's limit on parameters.
_KEYS_PER_QUERY = 400


class SqlRetries:
    def __init__(self, engine: AsyncEngine) -> None:
        dialect = sqlite if is_sqlite(engine) else postgresql
        upsert = dialect.insert(retries)
        replaced = [c.name for c in retries.c if c.name not in ("id", "queue", "message_id")]
        self._upsert = upsert.on_conflict_do_update(
            index_elements=["queue", "message_id"],
            set_={name: upsert.excluded[name] for name in replaced},
        )

    async def record(self, tx: AsyncConnection, records: Sequence[RetryRecord]) -> None:
        # One row per key: PostgreSQL refuses to upsert a row twice in one statement.
        latest = {(record.queue, record.message_id): record for record in records}
        if latest:
            await tx.execute(self._upsert, [dataclasses.asdict(r) for r in latest.values()])

    async def settle(self, tx: AsyncConnection, records: Sequence[DeliveryRecord]) -> None:
        """The ladder is over for these: they are stored or dead-lettered now. Only a
        message that came back from a delay queue (attempts > 1) or a dead letter can have
        a row, so a batch of first attempts costs no statement."""
        keys = sorted(
            {
                (record.queue, record.message_id)
                for record in records
                if record.attempts > 1 or record.status == "dead_lettered"
            }
        )
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            await tx.execute(
                delete(retries).where(tuple_(retries.c.queue, retries.c.message_id).in_(chunk))
            )

    async def attach(
        self, connection: AsyncConnection, message_id: str, found: list[Delivery]
    ) -> list[Delivery]:
        """`found` with each queue's retry row in place of an older outcome (or added, for
        a queue that stored nothing of the message yet)."""
        statement = select(retries).where(retries.c.message_id == message_id)
        rows = (await connection.execute(statement)).all()
        return merge_retrying(
            found,
            [
                RetryRecord(
                    queue=row.queue,
                    message_id=row.message_id,
                    exchange=row.exchange,
                    routing_key=row.routing_key,
                    attempts=row.attempts,
                    last_error=row.last_error,
                    next_attempt_at=as_utc(row.next_attempt_at),
                    updated_at=as_utc(row.updated_at),
                )
                for row in rows
            ],
        )


def merge_retrying(found: list[Delivery], retrying: Sequence[RetryRecord]) -> list[Delivery]:
    """One rule for every store: a stored message is where it is; a dead letter older than
    the retry (it was redriven and failed again) is on the ladder."""
    if not retrying:
        return found
    deliveries = list(found)
    for retry in retrying:
        view = Delivery(
            queue=retry.queue,
            status="retrying",
            attempts=retry.attempts,
            exchange=retry.exchange,
            routing_key=retry.routing_key,
            persisted_at=retry.updated_at,
            last_error=retry.last_error,
            next_attempt_at=retry.next_attempt_at,
        )
        at = next(
            (
                index
                for index, delivery in enumerate(deliveries)
                if delivery.queue == retry.queue and delivery.status != "conflict"
            ),
            None,
        )
        if at is None:
            deliveries.insert(_before_conflicts(deliveries), view)
        elif (
            deliveries[at].status == "dead_lettered"
            and deliveries[at].persisted_at < retry.updated_at
        ):
            deliveries[at] = view
    return deliveries


def _before_conflicts(deliveries: list[Delivery]) -> int:
    return next(
        (i for i, delivery in enumerate(deliveries) if delivery.status == "conflict"),
        len(deliveries),
    )
