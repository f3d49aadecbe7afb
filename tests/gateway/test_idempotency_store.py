"""The Idempotency-Key store on SQLite and PostgreSQL: claim, replay, reuse, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from consumers.store import SqlStore, open_store
from consumers.store.schema import idempotency_keys
from gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from gateway.idempotency import Answer, SqlIdempotencyKeys, request_hash, store_key


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    yield opened
    await opened.close()


def keys_on(store: SqlStore, *, wait_s: float = 0.3) -> SqlIdempotencyKeys:
    return SqlIdempotencyKeys(store.engine, ttl_s=60, pending_ttl_s=30, wait_s=wait_s)


def fresh_key(name: str) -> str:
    # PostgreSQL's database lives for the session: keys must not meet other tests' keys.
    return store_key("test", f"{name}-{uuid.uuid4().hex}")


async def test_first_claim_owns_the_key_and_a_repeat_gets_the_answer(store: SqlStore) -> None:
    keys = keys_on(store)
    key, digest = fresh_key("a"), request_hash(["body"])
    assert await keys.claim(key, digest) is None
    await keys.complete(key, Answer(202, b'{"message_id": "a"}'))
    assert await keys.claim(key, digest) == Answer(202, b'{"message_id": "a"}')
    with pytest.raises(IdempotencyKeyReused):
        await keys.claim(key, request_hash(["other body"]))


async def test_a_concurrent_claim_waits_for_the_answer(store: SqlStore) -> None:
    keys = keys_on(store, wait_s=5)
    key, digest = fresh_key("b"), request_hash(["body"])
    assert await keys.claim(key, digest) is None
    waiting = asyncio.create_task(keys.claim(key, digest))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await keys.complete(key, Answer(202, b"first"))
    assert await asyncio.wait_for(waiting, 5) == Answer(202, b"first")


async def test_a_claim_still_pending_after_the_wait_is_in_progress(store: SqlStore) -> None:
    keys = keys_on(store, wait_s=0.2)
    key, digest = fresh_key("c"), request_hash(["body"])
    assert await keys.claim(key, digest) is None
    with pytest.raises(IdempotencyKeyInProgress):
        await keys.claim(key, digest)


async def test_a_released_or_expired_key_can_be_claimed_again(store: SqlStore) -> None:
    keys = keys_on(store)
    key, digest = fresh_key("d"), request_hash(["body"])
    assert await keys.claim(key, digest) is None
    await keys.release(key)
    assert await keys.claim(key, digest) is None
    # A gateway that died leaves its claim pending; once expired, it is taken over.
    async with store.engine.begin() as connection:
        await connection.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(expires_at=idempotency_keys.c.created_at)
        )
    assert await keys.claim(key, request_hash(["another body"])) is None
    assert await keys.purge_expired() >= 0
