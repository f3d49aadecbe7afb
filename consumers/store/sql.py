"""The SQL store: SQLite (the embedded default) or PostgreSQL, through SQLAlchemy's async engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Dialect, Insert, Row, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.errors import InvalidCursor, StoreUnavailable
from consumers.store.engine import IMMEDIATE, create_engine, is_sqlite
from consumers.store.migrate import migrate
from consumers.store.records import (
    DeadLetterMessage,
    DeadLetterPage,
    Delivery,
    DeliveryRecord,
    MessagePage,
    Redrive,
    StoredMessage,
)
from consumers.store.schema import messages, redrives

# Connection-level failures: the database is down or went away. Anything else (a
# constraint we did not expect, a type error) is a bug and must not be retried forever.
_UNAVAILABLE = (OperationalError, InterfaceError, OSError, ConnectionError, TimeoutError)


# PostgreSQL's own words for "not now": connection exceptions (class 08), and a server
# shutting down or still starting up (57P01-57P03), which asyncpg reports as plain errors.
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _sqlstate(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        code = getattr(cause, "sqlstate", None)
        if isinstance(code, str):
            return code
        cause = getattr(cause, "orig", None) or cause.__cause__
    return ""


_COLUMNS = tuple(field.name for field in fields(DeliveryRecord))


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything hareway writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
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
        self._insert_rows = _DriverInsert(self._insert, engine.dialect)
        self._insert_dead_rows = _DriverInsert(self._insert_dead, engine.dialect)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        if not records:
            return
        async with self.transaction() as tx:
            await self.write(tx, records)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(**self._write_options)
                async with connection.begin():
                    yield connection
        except Exception as exc:
            if self.is_outage(exc):
                raise StoreUnavailable(_reason(exc)) from exc
            raise

    def is_outage(self, exc: BaseException) -> bool:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        return isinstance(exc, _UNAVAILABLE) or _sqlstate(exc).startswith(_OUTAGE_SQLSTATES)

    async def write(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> None:
        unique = _one_per_key(records)
        persisted = [record for record in unique if record.status == "persisted"]
        dead = [record for record in unique if record.status == "dead_lettered"]
        if persisted:
            await self._insert_rows.execute(tx, persisted, persisted_at)
        if dead:
            await self._insert_dead_rows.execute(tx, dead, persisted_at)

    async def persisted(
        self, tx: AsyncConnection, queue: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        statement = select(messages.c.message_id).where(
            messages.c.queue == queue,
            messages.c.message_id.in_(list(message_ids)),
            messages.c.status == "persisted",
        )
        return set((await tx.execute(statement)).scalars())

    async def deliveries(self, message_id: str) -> list[Delivery]:
        statement = (
            select(
                messages.c.queue,
                messages.c.status,
                messages.c.attempts,
                messages.c.exchange,
                messages.c.routing_key,
                messages.c.persisted_at,
            )
            .where(messages.c.message_id == message_id)
            .order_by(messages.c.id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            Delivery(
                queue=row.queue,
                status=row.status,
                attempts=row.attempts,
                exchange=row.exchange,
                routing_key=row.routing_key,
                persisted_at=_as_utc(row.persisted_at),
            )
            for row in rows
        ]

    async def page(self, queue: str, after: str | None, limit: int) -> MessagePage:
        # Dead letters have their own listing; a redriven one that succeeds gets a new
        # row, after every cursor handed out so far (see `write`).
        statement = select(messages).where(
            messages.c.queue == queue, messages.c.status == "persisted"
        )
        if after is not None:
            statement = statement.where(messages.c.id > _parse_cursor(after))
        # One row more than asked tells whether there is a next page without a count.
        statement = statement.order_by(messages.c.id).limit(limit + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        found = [
            StoredMessage(
                cursor=str(row.id),
                message_id=row.message_id,
                exchange=row.exchange,
                routing_key=row.routing_key,
                headers=row.headers,
                content_type=row.content_type,
                body=row.body,
                attempts=row.attempts,
                persisted_at=_as_utc(row.persisted_at),
            )
            for row in rows[:limit]
        ]
        next_cursor = found[-1].cursor if len(rows) > limit else None
        return MessagePage(messages=found, next_cursor=next_cursor)

    async def dead_letters(self, queue: str, after: str | None, limit: int) -> DeadLetterPage:
        statement = select(messages).where(
            messages.c.queue == queue, messages.c.status == "dead_lettered"
        )
        if after is not None:
            statement = statement.where(messages.c.id > _parse_cursor(after))
        statement = statement.order_by(messages.c.id).limit(limit + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        found = [_dead_letter(row) for row in rows[:limit]]
        next_cursor = found[-1].cursor if len(rows) > limit else None
        return DeadLetterPage(messages=found, next_cursor=next_cursor)

    async def dead_letters_by_id(
        self, queue: str, message_ids: Collection[str] | None
    ) -> list[DeadLetterMessage]:
        statement = select(messages).where(
            messages.c.queue == queue, messages.c.status == "dead_lettered"
        )
        if message_ids is not None:
            statement = statement.where(messages.c.message_id.in_(list(message_ids)))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement.order_by(messages.c.id))).all()
        return [_dead_letter(row) for row in rows]

    async def record_redrives(self, done: Sequence[Redrive]) -> None:
        if not done:
            return
        async with self.transaction() as tx:
            await tx.execute(insert(redrives), [asdict(redrive) for redrive in done])

    async def count(self, queue: str) -> int:
        statement = select(func.count()).where(messages.c.queue == queue)
        async with self._engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())

    async def close(self) -> None:
        await self._engine.dispose()


class _DriverInsert:
    """An upsert of many records, compiled once and run as the driver's own executemany.

    `tx.execute(statement, dicts)` runs SQLAlchemy's bind processing for every row: a
    parameter dict per row and a Python call per column, a fifth of the consumer's CPU
    per message. Here each row is one tuple, with the two conversions these columns
    need done the way SQLAlchemy does them: JSON as `json.dumps` (its default
    serializer), and on SQLite datetimes as SQLAlchemy's DATETIME storage format. The
    rows are the same, as tests/consumers/test_store.py checks against `tx.execute`.
    """

    def __init__(self, statement: Insert, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(_COLUMNS))
        order = compiled.positiontup
        # Both drivers take positional parameters (qmark, numeric_dollar).
        assert order is not None, f"{dialect.name} does not take positional parameters"
        columns = [name for name in order if name in _COLUMNS]
        # The record's columns come first (VALUES), the statement's own constants after
        # (ON CONFLICT ... WHERE): a row is the record's values plus one fixed tail.
        assert list(order[: len(columns)]) == columns, order
        self._tail = tuple(compiled.params[name] for name in order[len(columns) :])
        self._values = attrgetter(*columns)
        self._stamp = columns.index("persisted_at")
        self._json = [index for index, name in enumerate(columns) if name == "headers"]
        self._datetimes = (
            [index for index, name in enumerate(columns) if name.endswith("_at")]
            if dialect.name == "sqlite"
            else []
        )
        self.sql = compiled.string

    def row(self, record: DeliveryRecord, persisted_at: datetime | None) -> tuple[Any, ...]:
        values = list(self._values(record))
        if persisted_at is not None:
            values[self._stamp] = persisted_at
        for index in self._json:
            # Most rows have no headers; "{}" is what json.dumps makes of them, 20x faster.
            value = values[index]
            values[index] = "{}" if value == {} else json.dumps(value)
        for index in self._datetimes:
            values[index] = _sqlite_datetime(values[index])
        return (*values, *self._tail)

    async def execute(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> None:
        rows = [self.row(record, persisted_at) for record in records]
        await tx.exec_driver_sql(self.sql, rows)


def _sqlite_datetime(moment: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME format, "%04d-%02d-%02d %02d:%02d:%02d.%06d" of the
    # fields as they are (an aware value's offset is dropped; hareway writes UTC).
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _reason(exc: BaseException) -> str:
    """The driver's own words, without the SQL and parameters SQLAlchemy appends."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:300]


def _one_per_key(records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
    """One record per (queue, message_id): PostgreSQL refuses to upsert a row twice in one
    statement. A persisted outcome wins over a dead-lettered one."""
    chosen: dict[tuple[str, str], DeliveryRecord] = {}
    for record in records:
        key = (record.queue, record.message_id)
        if key not in chosen or chosen[key].status == "dead_lettered":
            chosen[key] = record
    return list(chosen.values())


def _dead_letter(row: Row[Any]) -> DeadLetterMessage:
    return DeadLetterMessage(
        cursor=str(row.id),
        queue=row.queue,
        message_id=row.message_id,
        exchange=row.exchange,
        routing_key=row.routing_key,
        headers=row.headers,
        content_type=row.content_type,
        body=row.body,
        attempts=row.attempts,
        last_error=row.last_error,
        dead_lettered_at=_as_utc(row.persisted_at),
    )


def _parse_cursor(cursor: str) -> int:
    try:
        value = int(cursor)
    except ValueError:
        raise InvalidCursor(f"not a cursor of this store: {cursor!r}") from None
    if value < 0:
        raise InvalidCursor(f"not a cursor of this store: {cursor!r}")
    return value


async def open_store(database_url: str) -> SqlStore:
    """Connect, bring the schema up to date, and hand back a ready store."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine)
