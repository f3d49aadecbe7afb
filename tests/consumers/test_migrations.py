"""The alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from hareway.store import open_store
from hareway.store.schema import metadata


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_matches_the_declared_one(database_url: str) -> None:
    store = await open_store(database_url)
    async with store.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    await store.close()
    assert differences == []
