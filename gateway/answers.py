"""What publish routes share: Server-Timing, and answering once per Idempotency-Key."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from gateway.idempotency import Answer, Idempotency, request_hash, store_key
from gateway.problems import store_problem
from hareway.store import StoreError

log = logging.getLogger(__name__)


class Timing:
    """The phases of one publish request, for its `Server-Timing` header, failed or not.

    `validate` (read and check the body), `publish` (frames to a confirm channel), `confirm`
    (until the broker confirmed). A request that fails shows the phase it failed in.
    """

    __slots__ = ("_mark", "_phases", "_stage")

    def __init__(self) -> None:
        self._mark = time.perf_counter()
        # Each closed phase's header prefix and seconds: formatted once, in `header`.
        self._phases: list[tuple[str, float]] = []
        self._stage: str | None = _VALIDATE

    def validated(self) -> None:
        self._close(_VALIDATE, time.perf_counter())
        self._stage = _PUBLISHING

    def confirmed(self, sent_at: float) -> None:
        self._close(_PUBLISH, sent_at)
        self._close(_CONFIRM, time.perf_counter())
        self._stage = None

    def replayed(self) -> None:
        """An Idempotency-Key repeat: the time went to finding the first answer."""
        self._close(_REPLAY, time.perf_counter())
        self._stage = None

    def header(self) -> str:
        phases = self._phases
        if self._stage is not None:
            phases = [*phases, (self._stage, time.perf_counter() - self._mark)]
        return ", ".join([f"{prefix}{seconds * 1000:.3f}" for prefix, seconds in phases])

    def _close(self, prefix: str, at: float) -> None:
        self._phases.append((prefix, at - self._mark))
        self._mark = at


def _phase(name: str, desc: str = "") -> str:
    """`name;desc="...";dur=` (the milliseconds follow), as DevTools' Timing tab shows it."""
    return f'{name};desc="{desc}";dur=' if desc else f"{name};dur="


_VALIDATE = _phase("validate")
_PUBLISHING = _phase("publish", "publish and confirm")
_PUBLISH = _phase("publish", "to the channel")
_CONFIRM = _phase("confirm", "broker confirm")
_REPLAY = _phase("replay", "first answer from the store")


async def answer_once(
    keys: Idempotency,
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
    except StoreError as exc:
        raise store_problem(exc, "cannot check the Idempotency-Key") from None
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
    except StoreError:
        log.exception("could not record an Idempotency-Key answer")
