"""What only the SQL store has, on real SQLite and PostgreSQL: its migrations, its own bulk
writers, rows from before a migration, and its errors mapped at its edge."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Text, cast, insert, select

from hareway.store import SqlStore, StoreRefused, StoreUnavailable, open_store
from hareway.store.engine import create_engine
from hareway.store.schema import messages
from tests.hareway.test_store_contract import record
from tests.support.sqlite import ruin


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    yield opened
    await opened.close()


async def test_migrating_twice_is_harmless(database_url: str) -> None:
    first = await open_store(database_url)
    second = await open_store(database_url)
    await first.close()
    await second.close()


async def test_an_unreachable_database_is_store_unavailable() -> None:
    unreachable = SqlStore(create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none"))
    with pytest.raises(StoreUnavailable):
        await unreachable.save([record("q", "a")])
    with pytest.raises(StoreUnavailable):
        await unreachable.page("q", None, 10)
    with pytest.raises(StoreUnavailable):
        await unreachable.claim("k", "h", 30)
    await unreachable.close()


async def test_a_sqlite_file_that_is_no_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "hareway.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    try:
        ruin(path)
        with pytest.raises(StoreUnavailable) as raised:
            await store.deliveries("m")
        # The driver's words, never SQL text or parameters.
        assert "SELECT" not in str(raised.value)
    finally:
        await store.close()


async def test_values_the_store_refuses_are_store_refused(store: SqlStore) -> None:
    # A lone surrogate no driver encodes; on PostgreSQL NUL in text as well.
    bad = "bad-\x00\ud800" if store.engine.dialect.name == "postgresql" else "bad-\ud800"
    with pytest.raises(StoreRefused) as raised:
        await store.save([record(f"q-{uuid.uuid4().hex[:8]}", bad)])
    assert "INSERT" not in str(raised.value)


_BINARY = ("body", "body_sha256")


@pytest.mark.parametrize("status", ["persisted", "dead_lettered"])
async def test_the_driver_level_insert_writes_what_sqlalchemy_would(
    store: SqlStore, status: str
) -> None:
    # SqlStore.write_rows converts JSON and datetimes itself (see hareway/store/bulk.py): the
    # stored values must be the very ones SQLAlchemy's own bind processing would write.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    written = dataclasses.replace(
        record(queue, "a"),
        headers={"tenant": "acme", "n": 7, "nested": {"ok": True, "list": [1, "x"]}, "é": "ü"},
        body=b"\x00\xffraw",
        published_at=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        persisted_at=datetime(2026, 11, 24, 18, 0, 0, 120000, tzinfo=UTC),
        status=status,  # type: ignore[arg-type]
        last_error="boom" if status == "dead_lettered" else None,
    )
    reference = dataclasses.replace(written, queue=queue + "-sqlalchemy")
    await store.save([written])
    async with store.transaction() as tx:
        row = {
            field.name: getattr(reference, field.name) for field in dataclasses.fields(reference)
        }
        row["body_sha256"] = reference.body_sha256
        await tx.connection.execute(insert(messages), [row])
    columns = [column for column in messages.c if column.name not in ("id", "queue")]
    async with store.engine.connect() as connection:
        rows = (
            await connection.execute(
                # As stored: text, not the Python values read back (the body stays bytes).
                select(
                    *(
                        column if column.name in _BINARY else cast(column, Text)
                        for column in columns
                    )
                )
                .where(messages.c.queue.in_([queue, reference.queue]))
                .order_by(messages.c.queue)
            )
        ).all()
    assert len(rows) == 2
    assert rows[0] == rows[1]


async def test_a_row_stored_before_body_digests_is_compared_by_its_body(store: SqlStore) -> None:
    # Rows written before migration 0003 have no digest: a redelivery of one must still be
    # told from a conflict.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    legacy = f"legacy-{uuid.uuid4().hex[:8]}"
    old = record(queue, legacy, b'{"v": "old"}')
    async with store.transaction() as tx:
        row = {field.name: getattr(old, field.name) for field in dataclasses.fields(old)}
        await tx.connection.execute(insert(messages), [{**row, "body_sha256": None}])
    async with store.transaction() as tx:
        assert await tx.write([record(queue, legacy, b'{"v": "old"}')]) == []
    async with store.transaction() as tx:
        conflicts = await tx.write([record(queue, legacy, b'{"v": "new"}')])
    assert [conflict.body for conflict in conflicts] == [b'{"v": "new"}']
    assert [d.status for d in await store.deliveries(legacy)] == ["persisted", "conflict"]


async def test_a_store_without_its_table_refuses_every_write_which_is_an_outage(
    tmp_path: Path,
) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'gone.db'}")
    try:
        async with store.engine.begin() as connection:
            await connection.execute(sa.text("DROP TABLE messages"))
        with pytest.raises(StoreUnavailable, match="refuses every write"):
            await store.probe()
    finally:
        await store.close()
