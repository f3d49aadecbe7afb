"""Push outcomes in SQL: the `pushes` table (one row per message of a subscribed queue),
and the `messages` row a push dead letter marks, so it lists and redrives like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hareway.store.engine import is_sqlite
from hareway.store.reads import as_utc
from hareway.store.records import Delivery, PushRecord
from hareway.store.schema import messages, pushes


class SqlPushes:
    def __init__(self, engine: AsyncEngine) -> None:
        dialect = sqlite if is_sqlite(engine) else postgresql
        upsert = dialect.insert(pushes)
        replaced = [c.name for c in pushes.c if c.name not in ("id", "queue", "message_id")]
        # The latest attempt replaces the one before: the row says where the message is now.
        self._upsert = upsert.on_conflict_do_update(
            index_elements=["queue", "message_id"],
            set_={name: upsert.excluded[name] for name in replaced},
        )

    async def record(self, tx: AsyncConnection, records: Sequence[PushRecord]) -> None:
        if not records:
            return
        # One row per key: PostgreSQL refuses to upsert a row twice in one statement.
        latest = {(record.queue, record.message_id): record for record in records}
        await tx.execute(self._upsert, [dataclasses.asdict(r) for r in latest.values()])
        for record in latest.values():
            if record.status != "dead_lettered":
                continue
            # A dead letter of the push is a dead letter of the queue: listed and redriven
            # over HTTP like one a handler gave up on (a redrive that succeeds replaces it).
            await tx.execute(
                update(messages)
                .where(
                    messages.c.queue == record.queue,
                    messages.c.message_id == record.message_id,
                    messages.c.status == "persisted",
                )
                .values(
                    status="dead_lettered",
                    last_error=record.last_error,
                    attempts=record.attempts,
                    persisted_at=record.updated_at,
                )
            )

    async def attach(
        self, connection: AsyncConnection, message_id: str, found: list[Delivery]
    ) -> list[Delivery]:
        """`found` (the message's deliveries) with each queue's push outcome, if any."""
        if not found:
            return found
        statement = select(pushes).where(pushes.c.message_id == message_id)
        rows = (await connection.execute(statement)).all()
        by_queue = {
            row.queue: PushRecord(
                queue=row.queue,
                message_id=row.message_id,
                status=row.status,
                attempts=row.attempts,
                last_status=row.last_status,
                last_error=row.last_error,
                next_attempt_at=row.next_attempt_at and as_utc(row.next_attempt_at),
                updated_at=as_utc(row.updated_at),
            )
            for row in rows
        }
        return [
            dataclasses.replace(delivery, push=by_queue.get(delivery.queue))
            if delivery.status != "conflict"
            else delivery
            for delivery in found
        ]
