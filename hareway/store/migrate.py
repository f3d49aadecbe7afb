"""Applying the alembic migrations at start, safely from several processes at once."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from hareway.store.engine import IMMEDIATE, is_sqlite

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same in every hareway process.
_MIGRATION_LOCK_KEY = 0x68617265


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already.

    The gateway and the consumers both call this at start, so it holds a lock that makes
    concurrent starts take turns: SQLite's write lock, or a PostgreSQL advisory lock.
    """
    if is_sqlite(engine):
        async with engine.connect() as connection:
            connection = await connection.execution_options(**IMMEDIATE)
            async with connection.begin():
                await connection.run_sync(_upgrade)
        return
    async with engine.begin() as connection:
        await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})"))
        await connection.run_sync(_upgrade)
