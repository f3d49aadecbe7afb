"""Retention in SQL: each call one short transaction over at most `limit` rows.

The pacing (how many rows, how often) is the janitor's (hareway/store/janitor.py); here
every statement is bounded so a writer never waits behind more than one small batch.
Every query is served by an index of migration 0004, with the queue and status as
equalities, so neither store walks other queues' rows.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Select, bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from hareway.store.engine import among, is_sqlite
from hareway.store.faults import mapped
from hareway.store.reads import SqlReads
from hareway.store.schema import (
    conflicts,
    expiry_marks,
    idempotency_keys,
    leases,
    messages,
    pushes,
    redrives,
    retries,
)

EXPIRED = "expired"


class SqlExpiry(SqlReads):
    """The store's reads plus its retention chores (both on the gateway's and the
    consumers' side: whoever holds the lease sweeps)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._sqlite = is_sqlite(engine)
        dialect = sqlite if self._sqlite else postgresql
        mark = dialect.insert(expiry_marks)
        self._mark = mark.on_conflict_do_update(
            index_elements=["queue", "status"],
            set_={"through_id": func.max(expiry_marks.c.through_id, mark.excluded.through_id)}
            if self._sqlite
            else {"through_id": func.greatest(expiry_marks.c.through_id, mark.excluded.through_id)},
        )
        lease = dialect.insert(leases)
        # Taken over only from its own holder or once it has run out.
        self._lease = lease.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": lease.excluded.holder, "expires_at": lease.excluded.expires_at},
            where=(leases.c.holder == lease.excluded.holder)
            | (leases.c.expires_at < bindparam("now", type_=DateTime(timezone=True))),
        )

    async def expire_before(self, queue: str, status: str, before: datetime, limit: int) -> int:
        """Stage one: the oldest rows of `queue` in `status` stored before `before` lose
        their body and headers and become key rows."""
        chosen = (
            select(messages.c.id)
            .where(
                messages.c.queue == queue,
                messages.c.status == status,
                messages.c.persisted_at < before,
            )
            .order_by(messages.c.persisted_at)
            .limit(limit)
        )
        return await self._expire(queue, status, chosen)

    async def oldest_kept(self, queue: str, keep: int) -> int | None:
        """Counted back from the newest: an index-only walk of `keep` entries, once a sweep.
        The row after it (if any) is the first one beyond `keep`."""
        statement = (
            select(messages.c.id)
            .where(messages.c.queue == queue, messages.c.status == "persisted")
            .order_by(messages.c.id.desc())
            .offset(keep - 1)
            .limit(2)
        )
        async with self._reading() as connection:
            ids = (await connection.execute(statement)).scalars().all()
        return int(ids[0]) if len(ids) == 2 else None

    async def expire_until(self, queue: str, oldest_kept: int, limit: int) -> int:
        chosen = (
            select(messages.c.id)
            .where(
                messages.c.queue == queue,
                messages.c.status == "persisted",
                messages.c.id < oldest_kept,
            )
            .order_by(messages.c.id)
            .limit(limit)
        )
        return await self._expire(queue, "persisted", chosen)

    async def _expire(self, queue: str, status: str, chosen: Select[tuple[int]]) -> int:
        async with self._writing() as connection:
            rows = (
                await connection.execute(
                    select(messages.c.id, messages.c.body).where(
                        among(messages.c.id, chosen, self._sqlite),
                        messages.c.body_sha256.is_(None),
                    )
                )
            ).all()
            if rows:
                # Rows stored before digests were kept: the digest is what stays of the body,
                # so a redelivery is still told from a conflict.
                await connection.execute(
                    update(messages)
                    .where(messages.c.id == bindparam("row_id"))
                    .values(body_sha256=bindparam("digest")),
                    [
                        {"row_id": row.id, "digest": hashlib.sha256(bytes(row.body)).digest()}
                        for row in rows
                    ],
                )
            expired = (
                (
                    await connection.execute(
                        update(messages)
                        .where(among(messages.c.id, chosen, self._sqlite))
                        .values(status=EXPIRED, body=b"", headers={}, last_error=None)
                        .returning(messages.c.id)
                    )
                )
                .scalars()
                .all()
            )
            if expired:
                await connection.execute(
                    self._mark.values(queue=queue, status=status, through_id=max(expired))
                )
        return len(expired)

    async def forget_before(self, queue: str, before: datetime, limit: int) -> int:
        """Stage two: key rows, conflicts, redrive records, push outcomes and stale retry
        records of `queue` from before `before` (the end of their dedupe window) go
        altogether."""
        gone = 0
        async with self._writing() as connection:
            for table, stamp, extra in (
                (messages, messages.c.persisted_at, (messages.c.status == EXPIRED,)),
                (conflicts, conflicts.c.persisted_at, ()),
                (redrives, redrives.c.redriven_at, ()),
                (pushes, pushes.c.updated_at, ()),
                # A message lost from its delay queue leaves its row behind (a later
                # outcome drops it); the table holds only messages on the ladder, no index.
                (retries, retries.c.updated_at, ()),
            ):
                chosen = (
                    select(table.c.id)
                    .where(table.c.queue == queue, *extra, stamp < before)
                    .order_by(stamp)
                    .limit(limit)
                )
                result = await connection.execute(
                    delete(table).where(among(table.c.id, chosen, self._sqlite))
                )
                gone += int(result.rowcount)
        return gone

    async def purge_keys(self, now: datetime, limit: int) -> int:
        """Expired Idempotency-Keys, oldest first."""
        chosen = (
            select(idempotency_keys.c.key)
            .where(idempotency_keys.c.expires_at < now)
            .order_by(idempotency_keys.c.expires_at)
            .limit(limit)
        )
        async with self._writing() as connection:
            result = await connection.execute(
                delete(idempotency_keys).where(among(idempotency_keys.c.key, chosen, self._sqlite))
            )
        return int(result.rowcount)

    async def hold_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Take or renew the lease `name` until `until`; False while another holds it."""
        async with self._writing() as connection:
            await connection.execute(
                self._lease.values(name=name, holder=holder, expires_at=until), {"now": now}
            )
            owner = (
                await connection.execute(select(leases.c.holder).where(leases.c.name == name))
            ).scalar_one()
        return bool(owner == holder)

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._writing() as connection:
            await connection.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    async def queues(self) -> list[str]:
        """Every queue with rows, by a loose index scan: one index probe per queue, not a
        walk of every row (neither database skips through an index by itself)."""
        statement = text(
            "WITH RECURSIVE q(queue) AS ("
            " SELECT min(queue) FROM messages"
            " UNION ALL"
            " SELECT (SELECT min(queue) FROM messages WHERE messages.queue > q.queue)"
            " FROM q WHERE q.queue IS NOT NULL)"
            " SELECT queue FROM q WHERE queue IS NOT NULL"
        )
        with mapped():
            async with self._engine.connect() as connection:
                return list((await connection.execute(statement)).scalars())

    async def compact(self, pages: int) -> int:
        """SQLite: give up to `pages` free pages back to the file system, so the file
        shrinks once key rows are deleted (a body emptied in place frees no whole page);
        needs `auto_vacuum=INCREMENTAL`, set on new files. PostgreSQL: autovacuum's."""
        if not self._sqlite:
            return 0
        # As one statement the pragma frees a page per step, and the driver's execute takes
        # one step; a script runs it to its end (in autocommit).
        async with self._driver() as driver:
            before = await _one_number(driver, "PRAGMA freelist_count")
            await driver.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            return max(0, before - await _one_number(driver, "PRAGMA freelist_count"))

    async def checkpoint(self) -> None:
        """SQLite copies the WAL back inside the commit that takes it past 1,000 pages: after
        the janitor's batches that would be a writer's commit. PASSIVE waits for no one."""
        if self._sqlite:
            async with self._driver() as driver:
                await driver.executescript("PRAGMA wal_checkpoint(PASSIVE);")

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """aiosqlite's own connection, outside SQLAlchemy's transactions (pragmas that
        must run in autocommit)."""
        with mapped():
            async with self._engine.connect() as connection:
                raw = await connection.get_raw_connection()
                yield raw.driver_connection


async def _one_number(driver: Any, pragma: str) -> int:
    async with driver.execute(pragma) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
