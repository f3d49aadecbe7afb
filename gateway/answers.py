"""What publish routes share: Server-Timing, and answering once per Idempotency-Key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.errors import StoreUnavailable
from gateway.idempotency import Answer, IdempotencyKeys, request_hash, store_key

log = logging.getLogger(__name__)

_STORE_DOWN = (OperationalError, InterfaceError, OSError, ConnectionError, TimeoutError)


def server_timing(phases: Iterable[tuple[str, str, float]]) -> str:
    """`name;desc="...";dur=ms` per phase, as the browser's DevTools Timing tab shows them."""
    return ", ".join(
        f"{name};dur={seconds * 1000:.3f}"
        if desc == name
        else f'{name};desc="{desc}";dur={seconds * 1000:.3f}'
        for name, desc, seconds in phases
    )


async def answer_once(
    keys: IdempotencyKeys,
    caller: str,
    key: str | None,
    request_parts: Iterable[str | bytes],
    produce: Callable[[], Awaitable[Answer]],
) -> tuple[Answer, bool]:
    """The answer, and whether it is a replay of an earlier request with the same key.

    Only an answer where everything was confirmed is kept; after any failure the key is
    released, so the client's retry with it publishes again (with the same message ids).
    """
    if key is None:
        return await produce(), False
    stored = store_key(caller, key)
    try:
        earlier = await keys.claim(stored, request_hash(request_parts))
    except _STORE_DOWN as exc:
        raise StoreUnavailable(f"cannot check the Idempotency-Key: {exc}") from None
    if earlier is not None:
        return earlier, True
    try:
        answer = await produce()
    except BaseException:
        await _quietly(keys.release(stored))
        raise
    if answer.status == 202:
        await _quietly(keys.complete(stored, answer))
    else:
        await _quietly(keys.release(stored))
    return answer, False


async def _quietly(step: Awaitable[None]) -> None:
    # The messages are out (or not) either way; a key left pending expires on its own.
    try:
        await step
    except _STORE_DOWN:
        log.exception("could not record an Idempotency-Key answer")
