"""The SQLAlchemy engine for SQLite or PostgreSQL, with the durability settings each needs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, any_, event, func
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Write transactions take SQLite's write lock up front: a deferred transaction that reads
# and then writes fails with SQLITE_BUSY instead of waiting when another process writes.
IMMEDIATE = {"sqlite_begin": "BEGIN IMMEDIATE"}


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def among(column: ColumnElement[Any], chosen: Select[Any], sqlite: bool) -> ColumnElement[bool]:
    """`column` is one of the values `chosen` selects (a bounded, indexed subquery).

    On PostgreSQL as `= ANY(ARRAY(subquery))`: as `IN (subquery)` the planner may turn it
    into a semi-join over a scan of the whole table once the subquery's LIMIT is in the
    thousands (measured: a full scan of 1M keys for LIMIT 8000, 1.9 s at 1M rows), while
    an array of values is looked up by the primary key whatever its size."""
    if sqlite:
        return column.in_(chosen)
    return column == any_(func.array(chosen.scalar_subquery()))


def create_engine(database_url: str) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(database_url)
    return create_async_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        # A database that accepts the connection but never answers (starting up, a cut
        # network) must fail the batch, so the consumer backs off instead of hanging.
        connect_args={"timeout": 10, "command_timeout": 60},
    )


def _sqlite_engine(database_url: str) -> AsyncEngine:
    engine = create_async_engine(database_url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (the driver's
        # own handling skips BEGIN before DDL and cannot take the write lock early).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Only takes on a file with no tables yet (a new store): freed pages can then be
        # given back bit by bit (the janitor's `compact`), so the file shrinks after
        # retention. An older file keeps its mode until an offline `VACUUM` after
        # `PRAGMA auto_vacuum=INCREMENTAL` (docs/operations.md).
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the consumer acks; NORMAL could lose the
        # last commits on power loss, and with them messages already acked.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 32 MiB of page cache a connection instead of 2: a grown store's indexes (the
        # dedupe key, the message id) take random inserts, each on a page of its own.
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine
