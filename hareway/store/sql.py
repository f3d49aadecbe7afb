"""The SQL store: SQLite (the embedded default) or PostgreSQL, through SQLAlchemy's async engine.

Every database error leaves it as the store's own (`hareway.store.faults.mapped`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hareway.store.bulk import bulk_insert
from hareway.store.commits import CHANNEL
from hareway.store.engine import IMMEDIATE, create_engine, is_sqlite
from hareway.store.errors import StoreUnavailable
from hareway.store.expiry import SqlExpiry
from hareway.store.faults import describe, mapped
from hareway.store.idempotency import Answer, Claim, SqlIdempotencyKeys
from hareway.store.migrate import migrate
from hareway.store.pushes import SqlPushes
from hareway.store.records import (
    Conflicts,
    Delivery,
    DeliveryRecord,
    PushRecord,
    RetryRecord,
    utcnow,
)
from hareway.store.retries import SqlRetries
from hareway.store.schema import conflicts, messages

# Message ids per `IN (...)` list: within every driver's limit on parameters.
_IDS_PER_QUERY = 500


class SqlTransaction:
    """A write transaction on one connection; a user handler writes on the same one."""

    __slots__ = ("_connection", "_store", "written")

    def __init__(self, store: SqlStore, connection: AsyncConnection) -> None:
        self._store = store
        self._connection = connection
        # The queues this transaction stored rows of: announced as it commits.
        self.written: set[str] = set()

    @property
    def connection(self) -> AsyncConnection:
        return self._connection

    @property
    def handler_tx(self) -> AsyncConnection:
        return self._connection

    async def write(
        self, records: Sequence[DeliveryRecord], persisted_at: datetime | None = None
    ) -> Conflicts:
        conflicts = await self._store.write_rows(self._connection, records, persisted_at)
        await self._store.retries.settle(self._connection, records)
        self.written.update(record.queue for record in records)
        return conflicts

    async def retrying(self, records: Sequence[RetryRecord]) -> None:
        await self._store.retries.record(self._connection, records)

    async def persisted(self, queue: str, message_ids: Collection[str]) -> set[str]:
        if not message_ids:
            return set()
        statement = select(messages.c.message_id).where(
            messages.c.queue == queue,
            messages.c.message_id.in_(list(message_ids)),
            # An expired row is a message stored (and handled) before: its key is kept.
            messages.c.status.in_(("persisted", "expired")),
        )
        return set((await self._connection.execute(statement)).scalars())

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._connection.begin_nested():
            yield


class SqlStore(SqlExpiry):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._keys = SqlIdempotencyKeys(engine)
        self._pushes = SqlPushes(engine)
        self.retries = SqlRetries(engine)
        self._announces = not is_sqlite(engine)
        dialect = sqlite if is_sqlite(engine) else postgresql
        upsert = dialect.insert(messages)
        key = ["queue", "message_id"]
        # A duplicate of a persisted message changes nothing. A message stored as
        # dead-lettered that now succeeded (it was redriven) replaces its row, with a new
        # id: that puts it after every cursor a reader of persisted messages holds.
        # (DO NOTHING would leave it dead-lettered; an update in place would hide it.)
        new_id = (
            select(func.max(messages.c.id) + 1).scalar_subquery()
            if is_sqlite(engine)
            else func.nextval(func.pg_get_serial_sequence("messages", "id"))
        )
        replaced = [column.name for column in messages.c if column.name not in ("id", *key)]
        self._insert = upsert.on_conflict_do_update(
            index_elements=key,
            set_={"id": new_id, **{name: upsert.excluded[name] for name in replaced}},
            where=messages.c.status == "dead_lettered",
        )
        # A message dead-lettered again (redriven, failed again) gets its latest error.
        self._insert_dead = upsert.on_conflict_do_update(
            index_elements=key,
            set_={
                column: upsert.excluded[column]
                for column in ("attempts", "last_error", "persisted_at")
            },
            where=messages.c.status == "dead_lettered",
        )
        self._write_options = IMMEDIATE if is_sqlite(engine) else {}
        self._insert_rows = bulk_insert(self._insert, engine.dialect)
        self._insert_dead_rows = bulk_insert(self._insert_dead, engine.dialect)
        self._insert_conflicts = dialect.insert(conflicts).on_conflict_do_nothing(
            index_elements=["queue", "message_id", "body_sha256"]
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        if not records:
            return
        async with self.transaction() as tx:
            await tx.write(records)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTransaction]:
        with mapped():
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(**self._write_options)
                async with connection.begin():
                    tx = SqlTransaction(self, connection)
                    yield tx
                    if self._announces:
                        await _announce(connection, tx.written)

    async def write_rows(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> Conflicts:
        unique, repeated = _one_per_key(records)
        persisted = [record for record in unique if record.status == "persisted"]
        dead = [record for record in unique if record.status == "dead_lettered"]
        # Only a record that did not go in can be a conflict (or a plain redelivery).
        candidates = repeated
        if persisted:
            candidates += await self._insert_rows.execute(tx, persisted, persisted_at)
        if dead:
            candidates += await self._insert_dead_rows.execute(tx, dead, persisted_at)
        if not candidates:
            return Conflicts()
        conflicting = await self._conflicting(tx, candidates)
        if conflicting:
            stamp = persisted_at or utcnow()
            await tx.execute(
                self._insert_conflicts, [_conflict_row(record, stamp) for record in conflicting]
            )
        return Conflicts.among(candidates, conflicting)

    async def _conflicting(
        self, tx: AsyncConnection, records: Sequence[DeliveryRecord]
    ) -> list[DeliveryRecord]:
        """The records whose id their queue holds with another body."""
        stored: dict[tuple[str, str], bytes] = {}
        by_queue: dict[str, list[str]] = {}
        for record in records:
            by_queue.setdefault(record.queue, []).append(record.message_id)
        for queue, ids in by_queue.items():
            for start in range(0, len(ids), _IDS_PER_QUERY):
                statement = select(
                    messages.c.message_id,
                    messages.c.body_sha256,
                    # Rows from before digests were kept: their body instead.
                    case((messages.c.body_sha256.is_(None), messages.c.body)).label("body"),
                ).where(
                    messages.c.queue == queue,
                    messages.c.message_id.in_(ids[start : start + _IDS_PER_QUERY]),
                )
                for row in await tx.execute(statement):
                    digest = row.body_sha256 or hashlib.sha256(bytes(row.body)).digest()
                    stored[(queue, row.message_id)] = bytes(digest)
        return [
            record
            for record in records
            if stored.get((record.queue, record.message_id), record.body_sha256)
            != record.body_sha256
        ]

    async def record_pushes(self, records: Sequence[PushRecord]) -> None:
        if not records:
            return
        async with self.transaction() as tx:
            await self._pushes.record(tx.connection, records)

    async def deliveries(self, message_id: str) -> list[Delivery]:
        found = await super().deliveries(message_id)
        with mapped():
            async with self._engine.connect() as connection:
                found = await self.retries.attach(connection, message_id, found)
                return await self._pushes.attach(connection, message_id, found)

    async def probe(self) -> None:
        try:
            async with self.transaction() as tx:
                await tx.connection.execute(select(messages.c.id).limit(0))
        except StoreUnavailable:
            raise
        except Exception as exc:
            # A table gone, a schema broken: the store refuses every write, an outage too.
            raise StoreUnavailable(f"the store refuses every write: {describe(exc)}") from exc

    async def claim(self, key: str, request_hash: str, pending_for_s: float) -> Claim | Answer:
        return await self._keys.claim(key, request_hash, pending_for_s)

    async def complete(self, key: str, answer: Answer, keep_for_s: float) -> None:
        await self._keys.complete(key, answer, keep_for_s)

    async def release(self, key: str) -> None:
        await self._keys.release(key)

    async def close(self) -> None:
        await self._engine.dispose()


async def _announce(connection: AsyncConnection, queues: Collection[str]) -> None:
    """PostgreSQL: tell every gateway listening (hareway/store/commits.py) which queues
    this transaction stored rows of, one notification per queue. NOTIFY is transactional:
    it goes out when the transaction commits, and not at all if it rolls back."""
    for queue in sorted(queues):
        await connection.execute(select(func.pg_notify(literal(CHANNEL), queue)))


def _one_per_key(
    records: Sequence[DeliveryRecord],
) -> tuple[list[DeliveryRecord], list[DeliveryRecord]]:
    """One record per (queue, message_id), since PostgreSQL refuses to upsert a row twice in
    one statement (a persisted outcome wins over a dead-lettered one); and the others,
    which may still be conflicts."""
    chosen: dict[tuple[str, str], DeliveryRecord] = {}
    repeated: list[DeliveryRecord] = []
    for record in records:
        key = (record.queue, record.message_id)
        earlier = chosen.get(key)
        if earlier is None or earlier.status == "dead_lettered":
            chosen[key] = record
            if earlier is not None:
                repeated.append(earlier)
        else:
            repeated.append(record)
    return list(chosen.values()), repeated


def _conflict_row(record: DeliveryRecord, persisted_at: datetime) -> dict[str, Any]:
    return {
        "queue": record.queue,
        "message_id": record.message_id,
        "exchange": record.exchange,
        "routing_key": record.routing_key,
        "headers": record.headers,
        "content_type": record.content_type,
        "content_encoding": record.content_encoding,
        "body": record.body,
        "body_sha256": record.body_sha256,
        "attempts": record.attempts,
        "persisted_at": persisted_at,
    }


async def open_store(database_url: str) -> SqlStore:
    """Connect, bring the schema up to date, and hand back a ready store."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine)
