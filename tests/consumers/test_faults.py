"""The store-fault classifier, on errors the real databases and drivers raise."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hareway.store.engine import create_engine
from hareway.store.faults import Fault, classify, describe
from tests.support.processes import free_port

_table = sa.Table(
    "fault_probe",
    sa.MetaData(),
    sa.Column("text", sa.String(5)),
    sa.Column("number", sa.BigInteger),
    sa.Column("positive", sa.Integer, sa.CheckConstraint("positive > 0")),
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(_table.metadata.drop_all)
        await connection.run_sync(_table.metadata.create_all)
    yield engine
    async with engine.begin() as connection:
        await connection.run_sync(_table.metadata.drop_all)
    await engine.dispose()


async def _fault_of(engine: AsyncEngine, statement: sa.Executable) -> BaseException:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any error: the classifier decides
        async with engine.begin() as connection:
            await connection.execute(statement)
    return raised.value


async def test_data_the_database_refuses_is_data(engine: AsyncEngine) -> None:
    statements: list[sa.Executable] = [
        _table.insert().values(positive=-1),  # a broken constraint, on both
        sa.text("INSERT INTO no_such_table VALUES (1)"),  # a missing table, on both
        _table.insert().values(text="\ud800"),  # a lone surrogate no driver encodes
    ]
    if engine.dialect.name == "postgresql":
        statements += [
            _table.insert().values(text="a\x00b"),  # NUL in text: 22021
            _table.insert().values(text="far too long"),  # 22001
            _table.insert().values(number=2**70),  # past 64 bits
        ]
    for statement in statements:
        fault = await _fault_of(engine, statement)
        assert classify(fault) is Fault.DATA, (statement, fault)
        assert "INSERT" not in describe(fault)  # the driver's words, never the SQL


async def test_a_locked_sqlite_file_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.1})
    try:
        fault = await _fault_of(engine, sa.text("INSERT INTO t VALUES (1)"))
        assert classify(fault) is Fault.OUTAGE, fault
    finally:
        holder.close()
        await engine.dispose()


async def test_a_postgresql_that_does_not_answer_is_an_outage() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    try:
        fault = await _fault_of(engine, sa.text("SELECT 1"))
        assert classify(fault) is Fault.OUTAGE, fault
    finally:
        await engine.dispose()


def test_an_error_from_code_is_neither() -> None:
    assert classify(RuntimeError("a bug")) is Fault.OTHER
    assert classify(KeyError("x")) is Fault.OTHER
