"""The janitor: retention and the Idempotency-Key purge, paced so no writer stalls behind it.

Every chore is a run of short transactions (`Sweeps`, one batch each). The batch doubles
while a transaction takes under `Pace.target_s`; one that takes over twice that shrinks
the next to what would have fit in the target at its cost per row; and no batch is over
`Pace.max_batch`, since what makes a batch slow is cold pages, and a batch grown on warm
ones ran into them 30x over. (Sizing every batch from the cost per row instead counted each
commit's fixed cost as rows' and shrank the batches to a few dozen rows: a third of the
throughput, and no shorter stalls on PostgreSQL, where a writer waits for the disk the two
share rather than for the janitor.) The janitor rests between batches as long as the last
one took, and in its rest checkpoints SQLite's WAL, so a writer on the same store (a
consumer's commit, a gateway's key claim; on SQLite they all queue for one lock) waits at
most about one batch, never for a checkpoint the janitor's pages made, and the janitor
holds the store at most half the time.

One janitor sweeps per deployment, however many processes run: each holds the store's
lease named after its chores before it sweeps, renews it between batches, and the others
skip their turn. The consumers sweep messages (on SQLite that is the process that owns
the writes), the gateways purge their Idempotency-Keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from hareway.store.errors import StoreError
from hareway.store.protocol import Sweeps
from hareway.store.records import utcnow
from hareway.topology import Topology

log = logging.getLogger(__name__)

# How long a lease lasts unless renewed: a janitor that died is replaced after this.
LEASE_S = 120.0

RETENTION = "retention"
KEYS = "idempotency-keys"


@dataclass(frozen=True, slots=True)
class Pace:
    # A writer waits behind at most one transaction, and commits of its own take 10-20 ms:
    # 15-30 ms a transaction keeps its longest wait well under 100 ms on a busy machine.
    target_s: float = 0.015
    first_batch: int = 100
    max_batch: int = 2_000
    # SQLite's vacuum writes every page it moves to the WAL: 2,000 of them (8 MiB) made
    # a 120 ms transaction at 2M rows.
    max_pages: int = 256
    min_rest_s: float = 0.01


@dataclass(slots=True)
class SweepReport:
    expired: int = 0
    forgotten: int = 0
    purged: int = 0
    compacted: int = 0  # SQLite pages given back to the file system
    transactions: int = 0
    longest_s: float = 0.0
    seconds: float = 0.0
    skipped: bool = False  # another process holds the lease


@dataclass(slots=True)
class _Batches:
    pace: Pace
    rest: Callable[[], Awaitable[None]]
    report: SweepReport = field(default_factory=SweepReport)

    async def drain(
        self,
        step: Callable[[int], Awaitable[int]],
        renew: Callable[[], Awaitable[None]],
        cap: int | None = None,
    ) -> int:
        """Run `step(batch)` until a batch comes back short; how many rows in all.

        Each drain finds its own size: an expiry, a delete and a page moved by the vacuum
        cost different amounts."""
        pace, total = self.pace, 0
        cap = pace.max_batch if cap is None else cap
        size = min(cap, pace.first_batch)
        while True:
            started = time.perf_counter()
            done = await step(size)
            took = time.perf_counter() - started
            total += done
            self.report.transactions += 1
            self.report.longest_s = max(self.report.longest_s, took)
            if done < size:
                return total
            if took > 2 * pace.target_s:
                size = max(1, int(size * pace.target_s / took))
            elif took < pace.target_s:
                size = min(cap, size * 2)
            await renew()
            await self.rest()
            await asyncio.sleep(max(pace.min_rest_s, took))


class Janitor:
    def __init__(
        self,
        store: Sweeps,
        topology: Topology,
        *,
        chores: str,
        every_s: float,
        pace: Pace = Pace(),
        clock: Callable[[], datetime] = utcnow,
        lease: str | None = None,
        queues: Collection[str] | None = None,
        swept: Callable[[SweepReport], None] | None = None,
    ) -> None:
        """`lease` names the lease (the chores' name by default: one per deployment);
        `queues` limits the retention sweep to those (by default every queue stored);
        `swept` hears of every sweep (the metrics)."""
        self._store = store
        self._topology = topology
        self._chores = chores
        self._every_s = every_s
        self._pace = pace
        self._clock = clock
        self._lease = lease or chores
        self._queues = queues
        self._swept = swept
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renewed = 0.0

    async def run(self) -> None:
        """Sweep every `every_s` for as long as the process runs; a store outage skips a turn.

        The first sweep waits `every_s` too: a fleet that restarts does not sweep at once."""
        while True:
            await asyncio.sleep(self._every_s)
            try:
                report = await self.sweep()
            except StoreError as exc:
                log.warning("%s sweep skipped: %s", self._chores, exc)
                continue
            if self._swept is not None:
                self._swept(report)
            if report.expired or report.forgotten or report.purged:
                log.info(
                    "%s sweep: %d expired, %d forgotten, %d keys purged in %.1fs "
                    "(%d transactions, the longest %.0f ms)",
                    self._chores,
                    report.expired,
                    report.forgotten,
                    report.purged,
                    report.seconds,
                    report.transactions,
                    report.longest_s * 1000,
                )

    async def sweep(self) -> SweepReport:
        """One sweep, if this process gets the lease."""
        started = time.perf_counter()
        if not await self._hold():
            return SweepReport(skipped=True)
        batches = _Batches(self._pace, self._store.checkpoint)
        try:
            if self._chores == KEYS:
                now = self._clock()
                step = partial(self._store.purge_keys, now)
                batches.report.purged = await batches.drain(step, self._renew)
            else:
                await self._retention(batches)
        finally:
            await self._store.release_lease(self._lease, self._holder)
        batches.report.seconds = time.perf_counter() - started
        return batches.report

    async def _retention(self, batches: _Batches) -> None:
        store, report, now = self._store, batches.report, self._clock()
        queues = await store.queues() if self._queues is None else self._queues
        for queue in queues:
            policy = self._topology.retention_of(queue)
            if policy.max_age is not None:
                before = now - timedelta(milliseconds=policy.max_age)
                step = partial(store.expire_before, queue, "persisted", before)
                report.expired += await batches.drain(step, self._renew)
            if policy.max_rows is not None:
                # Found once a sweep: counting `max_rows` back from the newest in every
                # batch walked that many index entries each time.
                oldest_kept = await store.oldest_kept(queue, policy.max_rows)
                if oldest_kept is not None:
                    step = partial(store.expire_until, queue, oldest_kept)
                    report.expired += await batches.drain(step, self._renew)
            if policy.dead_letters_max_age is not None:
                before = now - timedelta(milliseconds=policy.dead_letters_max_age)
                step = partial(store.expire_before, queue, "dead_lettered", before)
                report.expired += await batches.drain(step, self._renew)
            # Keys go only after bodies (only expired rows are forgotten), and never before
            # their dedupe window, counted from when the message was stored, has passed.
            before = now - timedelta(milliseconds=policy.dedupe_window)
            step = partial(store.forget_before, queue, before)
            report.forgotten += await batches.drain(step, self._renew)
        if report.expired or report.forgotten:
            report.compacted = await batches.drain(
                store.compact, self._renew, cap=self._pace.max_pages
            )

    async def _hold(self) -> bool:
        now = self._clock()
        held = await self._store.hold_lease(
            self._lease, self._holder, now, now + timedelta(seconds=LEASE_S)
        )
        self._renewed = time.monotonic()
        return held

    async def _renew(self) -> None:
        if time.monotonic() - self._renewed > LEASE_S / 3 and not await self._hold():
            raise StoreError(f"lost the {self._chores} lease to another process")
