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
        self._phases: list[str] = []
        self._stage: tuple[str, str] | None = ("validate", "")

    def validated(self) -> None:
        self._close("validate", "", time.perf_counter())
        self._stage = ("publish", "publish and confirm")

    def confirmed(self, sent_at: float) -> None:
        self._close("publish", "to the channel", sent_at)
        self._close("confirm", "broker confirm", time.perf_counter())
        self._stage = None

    def replayed(self) -> None:
        """An Idempotency-Key repeat: the time went to finding the first answer."""
        self._close("replay", "first answer from the store", time.perf_counter())
        self._stage = None

    def header(self) -> str:
        phases = list(self._phases)
        if self._stage is not None:
            name, desc = self._stage
            phases.append(_phase(name, desc, time.perf_counter() - self._mark))
        return ", ".join(phases)

    def _close(self, name: str, desc: str, at: float) -> None:
        self._phases.append(_phase(name, desc, at - self._mark))
        self._mark = at


def _phase(name: str, desc: str, seconds: float) -> str:
    """`name;desc="...";dur=ms`, as the browser's DevTools Timing tab shows it."""
    if desc:
        return f'{name};desc="{desc}";dur={seconds * 1000:.3f}'
    return f"{name};dur={seconds * 1000:.3f}"


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
