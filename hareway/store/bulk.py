"""Writing a batch of records the driver's own way, and telling which of them went in.

`tx.execute(statement, dicts)` runs SQLAlchemy's bind processing for every row: a
parameter dict per row and a Python call per column, a fifth of the consumer's CPU per
message. Here an upsert is compiled once and each row is one tuple, with the two
conversions these columns need done the way SQLAlchemy does them: JSON as `json.dumps`
(its default serializer), and on SQLite datetimes as SQLAlchemy's DATETIME storage
format. The rows are the same, as tests/consumers/test_store.py checks against
`tx.execute`.

Which records did not go in (a redelivery, or a conflict: the store tells them apart
after) each database says its own way: SQLite counts the rows an executemany changed, so a
batch whose every row went in needs no further look; on PostgreSQL the rows go as one
`INSERT ... SELECT FROM unnest(...)` whose `RETURNING` names the ones written, which also
saves asyncpg's round trip per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Dialect, Insert
from sqlalchemy.ext.asyncio import AsyncConnection

from hareway.store.records import DeliveryRecord

# The record's fields, and what each row also stores about its body.
COLUMNS = (*(field.name for field in fields(DeliveryRecord)), "body_sha256")

# "VALUES ($1::VARCHAR, ..., $14::BYTEA)" and "RETURNING messages.id", as SQLAlchemy
# compiles a PostgreSQL insert.
_VALUES = re.compile(r"VALUES \((?P<casts>[^()]*)\)")
_RETURNING = re.compile(r" RETURNING .*$")


class BulkInsert:
    """An upsert of many records as one executemany (SQLite)."""

    def __init__(self, statement: Insert, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(COLUMNS))
        order = compiled.positiontup
        # Both drivers take positional parameters (qmark, numeric_dollar).
        assert order is not None, f"{dialect.name} does not take positional parameters"
        columns = [name for name in order if name in COLUMNS]
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
        self.width = len(columns)
        self.sql = compiled.string

    def values(self, record: DeliveryRecord, persisted_at: datetime | None) -> list[Any]:
        values = list(self._values(record))
        if persisted_at is not None:
            values[self._stamp] = persisted_at
        for index in self._json:
            # Most rows have no headers; "{}" is what json.dumps makes of them, 20x faster.
            value = values[index]
            values[index] = "{}" if value == {} else json.dumps(value)
        for index in self._datetimes:
            values[index] = _sqlite_datetime(values[index])
        return values

    def row(self, record: DeliveryRecord, persisted_at: datetime | None) -> tuple[Any, ...]:
        return (*self.values(record, persisted_at), *self._tail)

    async def execute(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> list[DeliveryRecord]:
        """Upsert the records; those that may not have gone in (all of them, unless the
        driver counted every one as changed)."""
        rows = [self.row(record, persisted_at) for record in records]
        result = await tx.exec_driver_sql(self.sql, rows)
        return [] if result.rowcount == len(rows) else list(records)


class UnnestInsert(BulkInsert):
    """The same upsert as one statement over arrays, one per column (PostgreSQL)."""

    def __init__(self, statement: Insert, dialect: Dialect) -> None:
        super().__init__(statement, dialect)
        values = _VALUES.search(self.sql)
        assert values is not None, self.sql
        casts = [cast.strip() + "[]" for cast in values["casts"].split(",")]
        assert len(casts) == self.width, casts
        unnest = f"SELECT * FROM unnest({', '.join(casts)})"
        sql = self.sql[: values.start()] + unnest + self.sql[values.end() :]
        self.sql = _RETURNING.sub("", sql) + " RETURNING messages.queue, messages.message_id"

    async def execute(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> list[DeliveryRecord]:
        columns: list[list[Any]] = [[] for _ in range(self.width)]
        for record in records:
            for column, value in zip(columns, self.values(record, persisted_at), strict=True):
                column.append(value)
        result = await tx.exec_driver_sql(self.sql, (*columns, *self._tail))
        written = {(row.queue, row.message_id) for row in result}
        return [record for record in records if (record.queue, record.message_id) not in written]


def bulk_insert(statement: Insert, dialect: Dialect) -> BulkInsert:
    return (
        UnnestInsert(statement, dialect)
        if dialect.name == "postgresql"
        else BulkInsert(statement, dialect)
    )


def _sqlite_datetime(moment: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME format, "%04d-%02d-%02d %02d:%02d:%02d.%06d" of the
    # fields as they are (an aware value's offset is dropped; hareway writes UTC).
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")
