"""The gateway's rules over the store's Idempotency-Keys: a repeat waits briefly for a first
request still publishing, then is told it is in progress; another body is a reuse."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from gateway.idempotency import Idempotency, request_hash, store_key
from hareway.store import Answer, MemoryStore


def keys(wait_s: float) -> Idempotency:
    return Idempotency(MemoryStore(), ttl_s=60, pending_ttl_s=30, wait_s=wait_s)


def test_keys_are_the_callers_own() -> None:
    assert store_key("orders", "k") != store_key("billing", "k")
    assert request_hash(["a", b"b"]) != request_hash(["ab"])


async def test_a_concurrent_repeat_waits_for_the_first_answer() -> None:
    claims = keys(wait_s=5)
    digest = request_hash(["body"])
    assert await claims.claim("k", digest) is None
    waiting = asyncio.create_task(claims.claim("k", digest))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await claims.complete("k", Answer(202, b"first"))
    assert await asyncio.wait_for(waiting, 5) == Answer(202, b"first")


async def test_a_claim_still_pending_after_the_wait_is_in_progress() -> None:
    claims = keys(wait_s=0.2)
    digest = request_hash(["body"])
    assert await claims.claim("k", digest) is None
    with pytest.raises(IdempotencyKeyInProgress):
        await claims.claim("k", digest)
    with pytest.raises(IdempotencyKeyReused):
        await claims.claim("k", request_hash(["another body"]))
    await claims.release("k")
    assert await claims.claim("k", digest) is None
