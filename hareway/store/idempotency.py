"""Idempotency-Key answers in the SQL store, shared by every gateway replica on it.

A request claims its key by inserting a pending row before it publishes, so of two
concurrent requests with one key only one publishes. A pending row whose gateway died
expires, so the key is not stuck; what the gateway does with a pending or reused key
(wait, 409) is its own business (gateway/idempotency.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from hareway.store.engine import IMMEDIATE, is_sqlite
from hareway.store.faults import mapped
from hareway.store.records import Answer, Claim
from hareway.store.schema import idempotency_keys

__all__ = ["Answer", "Claim", "SqlIdempotencyKeys"]

# The status of a claim whose request has not answered yet.
_PENDING = 0


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlIdempotencyKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = sqlite if is_sqlite(engine) else postgresql
        self._insert = dialect.insert(idempotency_keys).on_conflict_do_nothing(
            index_elements=["key"]
        )
        self._write_options: dict[str, Any] = IMMEDIATE if is_sqlite(engine) else {}

    async def claim(self, key: str, request_hash: str, pending_for_s: float) -> Claim | Answer:
        now = datetime.now(UTC)
        pending = {
            "request_hash": request_hash,
            "status_code": _PENDING,
            "response": b"",
            "created_at": now,
            "expires_at": now + timedelta(seconds=pending_for_s),
        }
        with mapped():
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(**self._write_options)
                async with connection.begin():
                    inserted = await connection.execute(self._insert.values(key=key, **pending))
                    if inserted.rowcount == 1:
                        return Claim.OWNED
                    row = (
                        await connection.execute(
                            select(
                                idempotency_keys.c.request_hash,
                                idempotency_keys.c.status_code,
                                idempotency_keys.c.response,
                                idempotency_keys.c.expires_at,
                            ).where(idempotency_keys.c.key == key)
                        )
                    ).one_or_none()
                    if row is None or _utc(row.expires_at) <= now:
                        # Gone since the insert, or expired: this request takes the key over.
                        await connection.execute(
                            delete(idempotency_keys).where(idempotency_keys.c.key == key)
                        )
                        await connection.execute(self._insert.values(key=key, **pending))
                        return Claim.OWNED
        if row.request_hash != request_hash:
            return Claim.REUSED
        if row.status_code == _PENDING:
            return Claim.PENDING
        return Answer(row.status_code, bytes(row.response))

    async def complete(self, key: str, answer: Answer, keep_for_s: float) -> None:
        expires_at = datetime.now(UTC) + timedelta(seconds=keep_for_s)
        statement = (
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(status_code=answer.status, response=answer.body, expires_at=expires_at)
        )
        await self._write(statement)

    async def release(self, key: str) -> None:
        await self._write(
            delete(idempotency_keys).where(
                idempotency_keys.c.key == key, idempotency_keys.c.status_code == _PENDING
            )
        )

    async def _write(self, statement: Any) -> int:
        with mapped():
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(**self._write_options)
                async with connection.begin():
                    result = await connection.execute(statement)
        return int(result.rowcount)
