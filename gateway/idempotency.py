"""Idempotency-Key: the first answer is kept in the store; a repeat gets it back unpublished.

A request claims its key by inserting a pending row before it publishes, so of two
concurrent requests with one key only one publishes; the other waits briefly for the
first answer, else gets 409 "in progress". A pending row whose gateway died expires after
`pending_ttl_s`, so the key is not stuck; a failed publish releases its key at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.store.engine import IMMEDIATE, is_sqlite
from consumers.store.schema import idempotency_keys
from gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused

log = logging.getLogger(__name__)

_PENDING = 0
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class IdempotencyKeys(Protocol):
    async def claim(self, key: str, request_hash: str) -> Answer | None:
        """None: this request owns the key. An `Answer`: the earlier one, to replay.

        Raises `IdempotencyKeyReused` (another body) or `IdempotencyKeyInProgress`.
        """
        ...

    async def complete(self, key: str, answer: Answer) -> None: ...

    async def release(self, key: str) -> None: ...

    async def purge_expired(self) -> int: ...


def store_key(caller: str, key: str) -> str:
    """Keys are the caller's own: two callers may pick the same one without colliding."""
    return hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()


def request_hash(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlIdempotencyKeys:
    def __init__(
        self, engine: AsyncEngine, *, ttl_s: float, pending_ttl_s: float, wait_s: float
    ) -> None:
        self._engine = engine
        self._ttl = timedelta(seconds=ttl_s)
        self._pending_ttl = timedelta(seconds=pending_ttl_s)
        self._wait_s = wait_s
        dialect = sqlite if is_sqlite(engine) else postgresql
        self._insert = dialect.insert(idempotency_keys).on_conflict_do_nothing(
            index_elements=["key"]
        )
        self._write_options: dict[str, Any] = IMMEDIATE if is_sqlite(engine) else {}

    async def claim(self, key: str, request_hash: str) -> Answer | None:
        deadline = time.monotonic() + self._wait_s
        while True:
            answer = await self._try_claim(key, request_hash)
            if answer is None or answer.status != _PENDING:
                return answer
            if time.monotonic() >= deadline:
                raise IdempotencyKeyInProgress(
                    "a request with this Idempotency-Key is still being published; retry later"
                )
            await asyncio.sleep(_POLL_S)

    async def _try_claim(self, key: str, request_hash: str) -> Answer | None:
        now = datetime.now(UTC)
        pending = {
            "request_hash": request_hash,
            "status_code": _PENDING,
            "response": b"",
            "created_at": now,
            "expires_at": now + self._pending_ttl,
        }
        async with self._engine.connect() as connection:
            connection = await connection.execution_options(**self._write_options)
            async with connection.begin():
                inserted = await connection.execute(self._insert.values(key=key, **pending))
                if inserted.rowcount == 1:
                    return None
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
                    return None
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with another request body; use a new key"
            )
        return Answer(row.status_code, bytes(row.response))

    async def complete(self, key: str, answer: Answer) -> None:
        now = datetime.now(UTC)
        statement = (
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(status_code=answer.status, response=answer.body, expires_at=now + self._ttl)
        )
        await self._write(statement)

    async def release(self, key: str) -> None:
        await self._write(
            delete(idempotency_keys).where(
                idempotency_keys.c.key == key, idempotency_keys.c.status_code == _PENDING
            )
        )

    async def purge_expired(self) -> int:
        statement = delete(idempotency_keys).where(
            idempotency_keys.c.expires_at < datetime.now(UTC)
        )
        async with self._engine.connect() as connection:
            connection = await connection.execution_options(**self._write_options)
            async with connection.begin():
                result = await connection.execute(statement)
        return int(result.rowcount)

    async def _write(self, statement: Any) -> None:
        async with self._engine.connect() as connection:
            connection = await connection.execution_options(**self._write_options)
            async with connection.begin():
                await connection.execute(statement)


async def purge_periodically(keys: IdempotencyKeys, every_s: float) -> None:
    """Delete expired keys now and then; a failed round is logged and retried next time."""
    while True:
        await asyncio.sleep(every_s)
        try:
            purged = await keys.purge_expired()
        except Exception:
            log.exception("purging expired Idempotency-Keys failed")
        else:
            log.debug("purged %d expired Idempotency-Keys", purged)
