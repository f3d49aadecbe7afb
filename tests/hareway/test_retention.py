"""Retention, one contract class run against every store, and the janitor that paces it.

The clock is the janitor's: a test moves it forward instead of waiting days.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from hareway.store import DeliveryRecord, MemoryStore, Redrive, SqlStore, Store, open_store
from hareway.store.janitor import KEYS, RETENTION, Janitor, Pace
from hareway.store.records import Answer, RetryRecord
from hareway.topology import parse_topology
from tests.hareway.test_store_contract import dead, fresh, record

pytestmark = pytest.mark.timeout(60)

DAY = timedelta(days=1)


def aged(queue: str, message_id: str, age: timedelta, body: bytes = b'{"a": 1}') -> DeliveryRecord:
    return dataclasses.replace(
        record(queue, message_id, body), persisted_at=datetime.now(UTC) - age
    )


def janitor(
    store: Store, queue: str, retention: str, *, pace: Pace | None = None, lease: str | None = None
) -> Janitor:
    # Its own lease and only its queue: the PostgreSQL database is shared by the session.
    return Janitor(
        store,
        parse_topology(f"retention: {retention}"),
        chores=RETENTION,
        every_s=60,
        pace=pace or Pace(),
        lease=lease or fresh("lease"),
        queues=[queue],
    )


async def deliveries(store: Store, queue: str, message_id: str) -> list[str]:
    # Message ids repeat between tests on the session's PostgreSQL database: this queue's.
    return [d.status for d in await store.deliveries(message_id) if d.queue == queue]


class RetentionContract:
    async def test_old_bodies_go_and_their_keys_stay(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, "old", 3 * DAY), aged(queue, "new", timedelta(0))])
        report = await janitor(store, queue, "{max_age: 2d, dedupe_window: 10d}").sweep()
        assert report.expired == 1
        page = await store.page(queue, None, 10)
        assert [message.message_id for message in page.messages] == ["new"]
        assert await deliveries(store, queue, "old") == ["expired"]
        # The key row is what a redelivery meets: no new row, no conflict, a duplicate.
        async with store.transaction() as tx:
            written = await tx.write([aged(queue, "old", timedelta(0))])
            assert await tx.persisted(queue, ["old", "new", "other"]) == {"old", "new"}
        assert (list(written), written.duplicates) == ([], 1)
        assert await store.count(queue) == 2
        assert await store.conflicts(queue) == 0

    async def test_another_body_under_an_expired_id_is_still_a_conflict(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, "m", 3 * DAY)])
        await janitor(store, queue, "{max_age: 1d}").sweep()
        async with store.transaction() as tx:
            written = await tx.write([aged(queue, "m", timedelta(0), b'{"other": 2}')])
        assert [conflict.message_id for conflict in written] == ["m"]

    async def test_a_reader_behind_expired_messages_is_told_of_the_gap(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, f"m{n}", (5 - n) * DAY) for n in range(5)])
        first = await store.page(queue, None, 1)
        assert (first.oldest_cursor, first.gap) == (None, False)
        held = first.messages[0].cursor
        # m0, m1, m2 are older than 2.5 days.
        assert (await janitor(store, queue, "{max_age: 60h}").sweep()).expired == 3
        behind = await store.page(queue, held, 10)
        assert [message.message_id for message in behind.messages] == ["m3", "m4"]
        assert behind.gap is True
        assert behind.oldest_cursor is not None
        caught_up = await store.page(queue, behind.oldest_cursor, 10)
        assert caught_up.gap is False
        assert [message.message_id for message in caught_up.messages] == ["m3", "m4"]

    async def test_max_rows_keeps_the_newest(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, f"m{n}", timedelta(minutes=10 - n)) for n in range(10)])
        report = await janitor(store, queue, "{max_age: null, max_rows: 3}").sweep()
        assert report.expired == 7
        page = await store.page(queue, None, 100)
        assert [message.message_id for message in page.messages] == ["m7", "m8", "m9"]

    async def test_max_rows_exactly_reached_expires_nothing(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, f"m{n}", timedelta(minutes=10 - n)) for n in range(3)])
        report = await janitor(store, queue, "{max_age: null, max_rows: 3}").sweep()
        assert report.expired == 0
        assert len((await store.page(queue, None, 100)).messages) == 3

    async def test_max_rows_in_batches_smaller_than_the_excess(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, f"m{n}", timedelta(minutes=20 - n)) for n in range(20)])
        pace = Pace(first_batch=2, max_batch=3, min_rest_s=0)
        report = await janitor(store, queue, "{max_age: null, max_rows: 5}", pace=pace).sweep()
        assert report.expired == 15
        assert report.transactions >= 5
        page = await store.page(queue, None, 100)
        assert [message.message_id for message in page.messages] == [f"m{n}" for n in range(15, 20)]

    async def test_keys_go_after_the_dedupe_window_and_bodies_never_early(
        self, store: Store
    ) -> None:
        queue = fresh("q")
        await store.save([aged(queue, "old", 20 * DAY), aged(queue, "kept", 20 * DAY)])
        policy = "{max_age: 1d, dedupe_window: 14d}"
        # Expired but inside its window: the key row stays.
        assert (
            await janitor(store, queue, "{max_age: 1d, dedupe_window: 30d}").sweep()
        ).forgotten == 0
        assert await store.count(queue) == 2
        report = await janitor(store, queue, policy).sweep()
        assert (report.expired, report.forgotten) == (0, 2)
        assert await deliveries(store, queue, "old") == []
        # A row keeps its body as long as its max_age says, however old its window is.
        await store.save([aged(queue, "young", 20 * DAY)])
        report = await janitor(store, queue, "{max_age: 30d, dedupe_window: 1d}").sweep()
        assert (report.expired, report.forgotten) == (0, 0)
        assert [m.message_id for m in (await store.page(queue, None, 10)).messages] == ["young"]

    async def test_dead_letters_stay_unless_told(self, store: Store) -> None:
        queue = fresh("q")
        letter = dataclasses.replace(dead(queue, "d"), persisted_at=datetime.now(UTC) - 30 * DAY)
        await store.save([letter])
        await janitor(store, queue, "{max_age: 1d}").sweep()
        assert len((await store.dead_letters(queue, None, 10)).messages) == 1
        await janitor(store, queue, "{max_age: 1d, dead_letters_max_age: 7d}").sweep()
        page = await store.dead_letters(queue, None, 10)
        assert page.messages == []
        assert page.oldest_cursor is not None

    async def test_conflicts_and_redrives_go_with_the_window(self, store: Store) -> None:
        queue = fresh("q")
        then = datetime.now(UTC) - 20 * DAY
        for body in (b'{"a": 1}', b'{"other": 1}'):
            async with store.transaction() as tx:
                await tx.write([record(queue, "m", body)], persisted_at=then)
        await store.record_redrives(
            [Redrive(queue, "m", "orders", "k", "admin", datetime.now(UTC) - 20 * DAY)]
        )
        assert await store.conflicts(queue) == 1
        await janitor(store, queue, "{max_age: 1d, dedupe_window: 14d}").sweep()
        assert await store.conflicts(queue) == 0
        assert await store.redrives(queue) == []

    async def test_a_retry_record_left_behind_goes_with_the_window(self, store: Store) -> None:
        queue, now = fresh("q"), datetime.now(UTC)

        def retry(message_id: str, age: timedelta) -> RetryRecord:
            return RetryRecord(
                queue, message_id, "orders", "k", 2, "boom", now - age + DAY, now - age
            )

        async with store.transaction() as tx:
            await tx.retrying([retry("lost", 20 * DAY), retry("walking", timedelta(minutes=1))])
        report = await janitor(store, queue, "{max_age: 1d, dedupe_window: 14d}").sweep()
        assert report.forgotten == 1
        assert await deliveries(store, queue, "lost") == []
        assert await deliveries(store, queue, "walking") == ["retrying"]

    async def test_the_key_purge_takes_only_expired_keys(self, store: Store) -> None:
        gone, kept = fresh("gone"), fresh("kept")
        for key, keep_for_s in ((gone, 0.0), (kept, 3600.0)):
            await store.claim(key, "h", 30)
            await store.complete(key, Answer(202, b"{}"), keep_for_s)
        sweeper = Janitor(store, parse_topology(""), chores=KEYS, every_s=60, lease=fresh("l"))
        assert (await sweeper.sweep()).purged >= 1
        assert await store.claim(gone, "other", 30) != Answer(202, b"{}")
        assert await store.claim(kept, "h", 30) == Answer(202, b"{}")

    async def test_one_lease_holder_at_a_time(self, store: Store) -> None:
        name, now = fresh("lease"), datetime.now(UTC)
        assert await store.hold_lease(name, "a", now, now + timedelta(seconds=60))
        assert not await store.hold_lease(name, "b", now, now + timedelta(seconds=60))
        assert await store.hold_lease(name, "a", now, now + timedelta(seconds=60))
        # Run out: taken over.
        later = now + timedelta(seconds=61)
        assert await store.hold_lease(name, "b", later, later + timedelta(seconds=60))
        await store.release_lease(name, "b")
        assert await store.hold_lease(name, "c", now, now + timedelta(seconds=60))
        await store.release_lease(name, "c")

    async def test_a_sweep_is_skipped_while_another_process_holds_the_lease(
        self, store: Store
    ) -> None:
        queue = fresh("q")
        await store.save([aged(queue, "old", 3 * DAY)])
        now, lease = datetime.now(UTC), fresh("lease")
        assert await store.hold_lease(lease, "elsewhere", now, now + timedelta(seconds=60))
        try:
            report = await janitor(store, queue, "{max_age: 1d}", lease=lease).sweep()
            assert report.skipped
            assert report.expired == 0
        finally:
            await store.release_lease(lease, "elsewhere")
        assert (await janitor(store, queue, "{max_age: 1d}", lease=lease).sweep()).expired >= 1

    async def test_batches_are_bounded(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([aged(queue, f"m{n}", 3 * DAY) for n in range(50)])
        pace = Pace(first_batch=4, max_batch=8, min_rest_s=0)
        report = await janitor(store, queue, "{max_age: 1d}", pace=pace).sweep()
        assert report.expired >= 50
        # At most 8 rows a transaction: 50 rows take at least 7.
        assert report.transactions >= 7


class TestMemoryRetention(RetentionContract):
    @pytest.fixture
    async def store(self) -> Store:
        return MemoryStore()


class TestSqliteRetention(RetentionContract):
    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[Store]:
        opened = await open_store(sqlite_url)
        yield opened
        await opened.close()


class TestPostgresRetention(RetentionContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[Store]:
        opened = await open_store(postgres_url)
        yield opened
        await opened.close()


async def test_a_new_sqlite_store_gives_freed_pages_back(sqlite_url: str) -> None:
    store = await open_store(sqlite_url)
    try:
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA auto_vacuum")).scalar_one()
        assert mode == 2  # INCREMENTAL
        queue = fresh("q")
        big = b'{"pad": "' + b"x" * 4000 + b'"}'
        await store.save([aged(queue, f"m{n}", 3 * DAY, big) for n in range(500)])

        async def file_size() -> int:
            async with store.engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return await asyncio.to_thread(os.path.getsize, sqlite_url.split("///", 1)[1])

        size = await file_size()
        assert size > 500 * 4000
        report = await janitor(store, queue, "{max_age: 1d, dedupe_window: 2d}").sweep()
        assert (report.expired, report.forgotten) == (500, 500)
        assert report.compacted > 500
        # The rows went: their pages were freed and given back, the file is smaller.
        assert await file_size() < size / 2
    finally:
        await store.close()


async def test_a_checkpoint_copies_the_sqlite_wal_into_the_file(sqlite_url: str) -> None:
    """In WAL mode the file itself grows only when the log is copied back into it: fewer
    pages than SQLite's own threshold (1,000) stay in the log until someone checkpoints."""
    store = await open_store(sqlite_url)
    path = sqlite_url.split("///", 1)[1]
    try:
        queue = fresh("q")
        big = b'{"pad": "' + b"x" * 4000 + b'"}'
        await store.save([aged(queue, f"m{n}", DAY, big) for n in range(100)])
        before = await asyncio.to_thread(os.path.getsize, path)
        await store.checkpoint()
        assert await asyncio.to_thread(os.path.getsize, path) > before + 100 * 4000
    finally:
        await store.close()
