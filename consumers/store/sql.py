"""The SQL store: SQLite (the embedded default) or PostgreSQL, through SQLAlchemy's async engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.errors import InvalidCursor, StoreUnavailable
from consumers.store.engine import IMMEDIATE, create_engine, is_sqlite
from consumers.store.migrate import migrate
from consumers.store.records import Delivery, DeliveryRecord, MessagePage, StoredMessage
from consumers.store.schema import messages

# Connection-level failures: the database is down or went away. Anything else (a
# constraint we did not expect, a type error) is a bug and must not be retried forever.
_UNAVAILABLE = (OperationalError, InterfaceError, OSError, ConnectionError, TimeoutError)


_COLUMNS = tuple(field.name for field in fields(DeliveryRecord))


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything hareway writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = sqlite if is_sqlite(engine) else postgresql
        self._insert = dialect.insert(messages).on_conflict_do_nothing(
            index_elements=["queue", "message_id"]
        )
        self._write_options = IMMEDIATE if is_sqlite(engine) else {}

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        if not records:
            return
        # Shallow on purpose: dataclasses.asdict deep-copies every headers dict.
        rows = [{name: getattr(record, name) for name in _COLUMNS} for record in records]
        try:
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(**self._write_options)
                async with connection.begin():
                    await connection.execute(self._insert, rows)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(str(exc)) from exc
            raise

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
        statement = select(messages).where(messages.c.queue == queue)
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

    async def count(self, queue: str) -> int:
        statement = select(func.count()).where(messages.c.queue == queue)
        async with self._engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())

    async def close(self) -> None:
        await self._engine.dispose()


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
