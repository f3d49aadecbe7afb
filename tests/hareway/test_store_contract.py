"""The store's contract, one class run against every store: in memory, SQLite, PostgreSQL.

What the consumers and the gateway rely on is here; what only the SQL store has (its
migrations, its bulk writers, rows from before a migration) is in test_sql_store.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from hareway.store import (
    Answer,
    Claim,
    DeliveryRecord,
    InvalidCursor,
    MemoryStore,
    Redrive,
    Store,
    Transaction,
    open_store,
)
from hareway.store.records import RetryRecord


def record(queue: str, message_id: str, body: bytes = b'{"a": 1}') -> DeliveryRecord:
    return DeliveryRecord(
        queue=queue,
        message_id=message_id,
        exchange="orders",
        routing_key="order.created",
        headers={"tenant": "acme", "n": 7, "nested": {"ok": True}},
        content_type="application/json",
        body=body,
        attempts=1,
    )


def dead(queue: str, message_id: str, error: str = "boom", attempts: int = 3) -> DeliveryRecord:
    return dataclasses.replace(
        record(queue, message_id), status="dead_lettered", last_error=error, attempts=attempts
    )


def fresh(name: str) -> str:
    # The PostgreSQL database lives for the session: names must not meet other tests'.
    return f"{name}-{uuid.uuid4().hex[:10]}"


class StoreContract:
    """Subclasses provide the `store` fixture."""

    async def test_a_redelivered_message_adds_no_row(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([record(queue, "a"), record(queue, "b")])
        await store.save([record(queue, "b"), record(queue, "c"), record(queue, "c")])

        assert await store.count(queue) == 3
        assert await store.conflicts(queue) == 0

    async def test_the_same_message_in_two_queues_is_two_deliveries(self, store: Store) -> None:
        message_id = fresh("m")
        await store.save([record("audit", message_id), record("billing", message_id)])

        deliveries = await store.deliveries(message_id)
        assert [(d.queue, d.status) for d in deliveries] == [
            ("audit", "persisted"),
            ("billing", "persisted"),
        ]
        assert all(delivery.persisted_at.tzinfo is not None for delivery in deliveries)
        assert await store.deliveries(fresh("never")) == []

    async def test_pages_follow_the_store_order_with_a_cursor(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([record(queue, f"m{index}") for index in range(5)])

        first = await store.page(queue, None, 2)
        second = await store.page(queue, first.next_cursor, 2)
        third = await store.page(queue, second.next_cursor, 2)

        seen = [message.message_id for page in (first, second, third) for message in page.messages]
        assert seen == ["m0", "m1", "m2", "m3", "m4"]
        assert third.next_cursor is None
        last = third.messages[-1]
        assert (last.body, last.headers, last.content_type) == (
            b'{"a": 1}',
            {"tenant": "acme", "n": 7, "nested": {"ok": True}},
            "application/json",
        )
        assert (last.exchange, last.routing_key, last.attempts) == ("orders", "order.created", 1)

    @pytest.mark.parametrize("cursor", ["not-a-cursor", "-1"])
    async def test_a_foreign_cursor_is_refused(self, store: Store, cursor: str) -> None:
        with pytest.raises(InvalidCursor):
            await store.page("q", cursor, 10)
        with pytest.raises(InvalidCursor):
            await store.dead_letters("q", cursor, 10)

    async def test_duplicates_inside_one_batch_do_not_fail_it(self, store: Store) -> None:
        queue = fresh("q")
        a, b = fresh("a"), fresh("b")
        await store.save([record(queue, a), record(queue, a), dead(queue, b), dead(queue, b)])
        await store.save([dead(queue, a), record(queue, b), record(queue, b)])

        assert await store.count(queue) == 2
        assert [d.status for d in await store.deliveries(a)] == ["persisted"]
        assert [d.status for d in await store.deliveries(b)] == ["persisted"]

    async def test_a_redriven_dead_letter_that_succeeds_becomes_a_new_persisted_row(
        self, store: Store
    ) -> None:
        queue = fresh("q")
        await store.save([dead(queue, "x"), record(queue, "y")])
        reader_cursor = (await store.page(queue, None, 10)).messages[-1].cursor
        [listed] = (await store.dead_letters(queue, None, 10)).messages

        await store.save([record(queue, "x")])

        assert (await store.dead_letters(queue, None, 10)).messages == []
        # A reader past y's cursor still sees x: it was stored after, not in its old place.
        after = await store.page(queue, reader_cursor, 10)
        assert [message.message_id for message in after.messages] == ["x"]
        assert (listed.message_id, listed.last_error, listed.attempts) == ("x", "boom", 3)
        assert listed.dead_lettered_at.tzinfo is not None

    async def test_dying_again_keeps_the_latest_error_and_never_buries_a_stored_message(
        self, store: Store
    ) -> None:
        queue = fresh("q")
        await store.save([dead(queue, "x", "first", 3), record(queue, "y")])
        await store.save([dead(queue, "x", "second", 2), dead(queue, "y", "late")])

        [x] = (await store.dead_letters(queue, None, 10)).messages
        assert (x.message_id, x.last_error, x.attempts) == ("x", "second", 2)
        assert [m.message_id for m in (await store.page(queue, None, 10)).messages] == ["y"]

    async def test_dead_letters_page_by_cursor(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([dead(queue, f"d{index}") for index in range(3)])
        first = await store.dead_letters(queue, None, 2)
        second = await store.dead_letters(queue, first.next_cursor, 2)
        assert [m.message_id for m in first.messages + second.messages] == ["d0", "d1", "d2"]
        assert second.next_cursor is None

    async def test_dead_letters_are_counted_per_queue(self, store: Store) -> None:
        queue, other = fresh("q"), fresh("q")
        await store.save([dead(queue, f"d{index}") for index in range(3)])
        await store.save([record(queue, "alive"), dead(other, "d0")])
        assert await store.dead_letter_count(queue) == 3
        assert await store.dead_letter_count(other) == 1
        assert await store.dead_letter_count(fresh("q")) == 0

    async def test_dead_letters_by_id_and_the_redrive_log(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([dead(queue, "a"), dead(queue, "b"), record(queue, "c")])

        everything = await store.dead_letters_by_id(queue, None)
        chosen = await store.dead_letters_by_id(queue, ["b", "c", "zzz"])
        at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        await store.record_redrives([Redrive(queue, "b", "orders", "order.created", "bob", at)])
        await store.record_redrives([])

        assert [message.message_id for message in everything] == ["a", "b"]
        assert [message.message_id for message in chosen] == ["b"]
        assert await store.redrives(queue) == [
            Redrive(queue, "b", "orders", "order.created", "bob", at)
        ]

    async def test_persisted_names_only_stored_messages(self, store: Store) -> None:
        queue = fresh("q")
        await store.save([record(queue, "a"), dead(queue, "b")])
        async with store.transaction() as tx:
            assert await tx.persisted(queue, {"a", "b", "c"}) == {"a"}
            assert await tx.persisted(queue, set()) == set()

    async def test_a_transaction_that_raises_writes_nothing(self, store: Store) -> None:
        queue = fresh("q")

        async def write_then_fail() -> None:
            async with store.transaction() as tx:
                await tx.write([record(queue, "a")])
                raise RuntimeError("after writing")

        with pytest.raises(RuntimeError, match="after writing"):
            await write_then_fail()
        assert await store.count(queue) == 0

    async def test_a_savepoint_takes_back_only_its_own_writes(self, store: Store) -> None:
        queue = fresh("q")

        async def fail_in(tx: Transaction) -> None:
            async with tx.savepoint():
                await tx.write([record(queue, "taken-back")])
                raise RuntimeError("a handler failed")

        async with store.transaction() as tx:
            await tx.write([record(queue, "kept")])
            with pytest.raises(RuntimeError):
                await fail_in(tx)
            async with tx.savepoint():
                await tx.write([record(queue, "also-kept")])
        page = await store.page(queue, None, 10)
        assert [message.message_id for message in page.messages] == ["kept", "also-kept"]

    async def test_a_write_can_stamp_its_own_time_on_every_row(self, store: Store) -> None:
        # The consumer stamps the moment its batch goes in, not when each message arrived.
        queue = fresh("q")
        arrived = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
        written_at = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
        records = [dataclasses.replace(record(queue, id_), persisted_at=arrived) for id_ in "ab"]
        async with store.transaction() as tx:
            await tx.write(records, written_at)
        page = await store.page(queue, None, 10)
        assert [message.persisted_at for message in page.messages] == [written_at, written_at]

    async def test_another_body_under_a_stored_id_is_a_conflict_kept_once(
        self, store: Store
    ) -> None:
        queue, same = fresh("q"), fresh("same")
        async with store.transaction() as tx:
            assert await tx.write([record(queue, same, b'{"v": 1}')]) == []
        async with store.transaction() as tx:
            # A redelivery is no conflict; another body is.
            conflicts = await tx.write(
                [record(queue, same, b'{"v": 1}'), record(queue, same, b'{"v": 2}')]
            )
        async with store.transaction() as tx:
            again = await tx.write([record(queue, same, b'{"v": 2}')])

        assert [conflict.body for conflict in conflicts] == [b'{"v": 2}']
        assert [conflict.body for conflict in again] == [b'{"v": 2}']
        assert [d.status for d in await store.deliveries(same)] == ["persisted", "conflict"]
        assert await store.conflicts(queue) == 1  # the same conflict twice is kept once
        assert await store.count(queue) == 1

    async def test_two_bodies_for_one_id_in_one_batch_keep_the_first_and_the_conflict(
        self, store: Store
    ) -> None:
        queue = fresh("q")
        async with store.transaction() as tx:
            conflicts = await tx.write(
                [
                    record(queue, "twice", b"1"),
                    record(queue, "twice", b"1"),
                    record(queue, "twice", b"2"),
                ]
            )
        assert [conflict.body for conflict in conflicts] == [b"2"]
        assert await store.count(queue) == 1
        assert await store.conflicts(queue) == 1

    async def test_writes_take_turns(self, store: Store) -> None:
        queue = fresh("q")

        async def write(index: int) -> None:
            async with store.transaction() as tx:
                await tx.write([record(queue, f"m{index}")])

        await asyncio.gather(*(write(index) for index in range(10)))
        assert await store.count(queue) == 10

    async def test_a_retry_is_retrying_until_its_next_outcome(self, store: Store) -> None:
        queue, message_id = fresh("q"), fresh("m")
        now = datetime.now(UTC)
        retry = RetryRecord(
            queue, message_id, "orders", "order.created", 1, "boom", now + timedelta(seconds=9)
        )
        async with store.transaction() as tx:
            await tx.retrying([retry])
        [delivery] = await store.deliveries(message_id)
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("retrying", 1, "boom")
        assert delivery.next_attempt_at == retry.next_attempt_at
        # A transaction that rolls back keeps no retry.
        gone = fresh("gone")

        async def retry_then_fail() -> None:
            async with store.transaction() as tx:
                await tx.retrying([dataclasses.replace(retry, message_id=gone)])
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await retry_then_fail()
        assert await store.deliveries(gone) == []
        # The second attempt stores it: where it is now.
        await store.save([dataclasses.replace(record(queue, message_id), attempts=2)])
        [delivery] = await store.deliveries(message_id)
        assert (delivery.status, delivery.attempts) == ("persisted", 2)

    async def test_a_redriven_dead_letter_on_the_ladder_again_is_retrying(
        self, store: Store
    ) -> None:
        queue, message_id = fresh("q"), fresh("m")
        await store.save([dead(queue, message_id, attempts=1)])
        later = datetime.now(UTC) + timedelta(seconds=1)
        retry = RetryRecord(queue, message_id, "orders", "order.created", 1, "again", later, later)
        async with store.transaction() as tx:
            await tx.retrying([retry])
        [delivery] = await store.deliveries(message_id)
        assert (delivery.status, delivery.last_error) == ("retrying", "again")

    async def test_holds_and_commits_since_name_the_queues_that_got_rows(
        self, store: Store
    ) -> None:
        first, second = fresh("q"), fresh("q")
        assert not await store.holds(first)
        await store.save([record(first, "a")])
        cursor, queues = await store.commits_since(None)
        assert queues == set()
        assert await store.commits_since(cursor) == (cursor, set())
        await store.save([record(second, "b"), record(first, "c")])
        later, queues = await store.commits_since(cursor)
        assert later > cursor
        assert queues == {first, second}
        assert await store.holds(first)
        assert await store.holds(second)

    async def test_probe_answers_while_the_store_takes_writes(self, store: Store) -> None:
        await store.probe()

    async def test_first_claim_owns_the_key_and_a_repeat_gets_the_answer(
        self, store: Store
    ) -> None:
        key = fresh("key")
        assert await store.claim(key, "hash-1", 30) is Claim.OWNED
        assert await store.claim(key, "hash-1", 30) is Claim.PENDING
        assert await store.claim(key, "hash-2", 30) is Claim.REUSED
        await store.complete(key, Answer(202, b'{"message_id": "a"}'), 60)
        assert await store.claim(key, "hash-1", 30) == Answer(202, b'{"message_id": "a"}')
        assert await store.claim(key, "hash-2", 30) is Claim.REUSED
        await store.release(key)  # only a pending key is released
        assert await store.claim(key, "hash-1", 30) == Answer(202, b'{"message_id": "a"}')

    async def test_a_released_or_expired_key_can_be_claimed_again(self, store: Store) -> None:
        key = fresh("key")
        assert await store.claim(key, "hash-1", 30) is Claim.OWNED
        await store.release(key)
        # A gateway that died leaves its claim pending; once expired, it is taken over.
        assert await store.claim(key, "hash-1", 0) is Claim.OWNED
        assert await store.claim(key, "hash-2", 30) is Claim.OWNED
        await store.complete(key, Answer(202, b"done"), 0)
        assert await store.purge_keys(datetime.now(UTC), 1000) >= 1
        assert await store.claim(key, "hash-3", 30) is Claim.OWNED


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> Store:
        return MemoryStore()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[Store]:
        opened = await open_store(sqlite_url)
        yield opened
        await opened.close()


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[Store]:
        opened = await open_store(postgres_url)
        yield opened
        await opened.close()
