"""Idempotency-Key: the first answer is kept in the store; a repeat gets it back unpublished.

A request claims its key in the store before it publishes (hareway/store/idempotency.py),
so of two concurrent requests with one key only one publishes; the other waits briefly for
the first answer, else gets 409 "in progress". A claim whose gateway died expires after
`pending_ttl_s`, so the key is not stuck; a failed publish releases its key at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable

from gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from hareway.store import Answer, Claim, IdempotencyKeys

__all__ = ["Answer", "Idempotency", "request_hash", "store_key"]

log = logging.getLogger(__name__)

_POLL_S = 0.05


def store_key(caller: str, key: str) -> str:
    """Keys are the caller's own: two callers may pick the same one without colliding."""
    return hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()


def request_hash(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


class Idempotency:
    """The gateway's rules over the store's keys: how long answers and claims are kept,
    and how long a repeat waits for a first request still publishing."""

    def __init__(
        self, keys: IdempotencyKeys, *, ttl_s: float, pending_ttl_s: float, wait_s: float
    ) -> None:
        self._keys = keys
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._wait_s = wait_s

    async def claim(self, key: str, request_hash: str) -> Answer | None:
        """None: this request owns the key. An `Answer`: the earlier one, to replay.

        Raises `IdempotencyKeyReused` (another body) or `IdempotencyKeyInProgress`.
        """
        deadline = time.monotonic() + self._wait_s
        while True:
            claim = await self._keys.claim(key, request_hash, self._pending_ttl_s)
            if claim is Claim.OWNED:
                return None
            if claim is Claim.REUSED:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with another request body; use a new key"
                )
            if isinstance(claim, Answer):
                return claim
            if time.monotonic() >= deadline:
                raise IdempotencyKeyInProgress(
                    "a request with this Idempotency-Key is still being published; retry later"
                )
            await asyncio.sleep(_POLL_S)

    async def complete(self, key: str, answer: Answer) -> None:
        await self._keys.complete(key, answer, self._ttl_s)

    async def release(self, key: str) -> None:
        await self._keys.release(key)
