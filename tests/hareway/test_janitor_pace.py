"""The janitor's pace, on a clock of its own: a batch doubles while fast, a slow one
shrinks the next to what fits in the target, and every rest checkpoints the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from hareway.store.janitor import Pace, _Batches

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chore(
    clock: Clock, rows: int, cost: Callable[[int], float], sizes: list[int]
) -> Callable[[int], Awaitable[int]]:
    left = rows

    async def step(limit: int) -> int:
        nonlocal left
        done = min(left, limit)
        left -= done
        sizes.append(limit)
        clock.now += cost(len(sizes)) * done
        return done

    return step


async def drain(
    monkeypatch: pytest.MonkeyPatch,
    rows: int,
    cost: Callable[[int], float],
    pace: Pace,
    cap: int | None = None,
) -> tuple[list[int], int]:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    rests = 0

    async def rest() -> None:
        nonlocal rests
        rests += 1

    async def renew() -> None:
        pass

    sizes: list[int] = []
    batches = _Batches(pace, rest)
    assert await batches.drain(chore(clock, rows, cost, sizes), renew, cap) == rows
    return sizes, rests


PACE = Pace(target_s=0.015, first_batch=100, max_batch=2_000, min_rest_s=0)


async def test_a_cheap_chore_grows_by_doubling_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes, rests = await drain(monkeypatch, 40_000, lambda _: 1e-7, PACE)
    assert sizes[:6] == [100, 200, 400, 800, 1600, 2000]
    assert max(sizes) == 2_000
    # A rest (and with it a checkpoint) after every full batch, none after the last.
    assert rests == len(sizes) - 1


async def test_the_vacuum_has_a_cap_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes, _ = await drain(monkeypatch, 5_000, lambda _: 1e-7, PACE, cap=PACE.max_pages)
    assert sizes[:3] == [100, 200, 256]
    assert max(sizes) == 256


async def test_a_slow_batch_shrinks_the_next_to_what_fits_in_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cheap rows, but the fourth batch hits cold pages: 100x the cost per row (80 ms).
    sizes, _ = await drain(monkeypatch, 30_000, lambda batch: 1e-4 if batch == 4 else 1e-6, PACE)
    assert sizes[:4] == [100, 200, 400, 800]
    assert sizes[4] == 150  # 800 rows took 80 ms: 150 fit in 15 ms
    assert sizes[5:8] == [300, 600, 1200]  # fast again: doubling again


async def test_a_batch_between_the_target_and_twice_it_keeps_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes, _ = await drain(monkeypatch, 1_000, lambda _: 0.0002, PACE)  # 20 ms a batch
    assert set(sizes) == {100}


async def test_the_sweep_rests_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    sizes, _ = await drain(monkeypatch, 1_000, lambda _: 0.001, Pace(min_rest_s=0.01))
    # As long as the batch took, at least the minimum.
    assert slept[0] == pytest.approx(0.1)
    assert all(rest >= 0.01 for rest in slept)
    assert len(slept) == len(sizes) - 1
