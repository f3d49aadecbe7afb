"""The store in memory, for tests: the same contract as the SQL store (the contract tests in
tests/hareway/test_store_contract.py run against both), and no database.

Write transactions take turns, as on SQLite, and what a transaction or savepoint wrote is
taken back when its block raises. Two switches stand in for a database's troubles:
`down` (every call raises `StoreUnavailable`) and `refuse` (a record it names makes the
write raise `StoreRefused`, as a constraint would). A user handler's `tx` runs no SQL here:
use `consumers.testing` with SQLite for handlers that write their own tables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from hareway.store.errors import StoreRefused, StoreUnavailable
from hareway.store.records import (
    Answer,
    Claim,
    Conflicts,
    DeadLetterMessage,
    DeadLetterPage,
    Delivery,
    DeliveryRecord,
    MessagePage,
    PushRecord,
    Redrive,
    RetryRecord,
    StoredMessage,
    gap,
    parse_cursor,
    utcnow,
)
from hareway.store.retries import merge_retrying


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    record: DeliveryRecord
    # Set once its body expired: what is left to tell a redelivery from a conflict.
    expired_digest: bytes | None = None

    @property
    def status(self) -> str:
        return self.record.status if self.expired_digest is None else "expired"

    @property
    def digest(self) -> bytes:
        return self.record.body_sha256 if self.expired_digest is None else self.expired_digest

    def expired(self) -> _Row:
        emptied = dataclasses.replace(self.record, body=b"", headers={}, last_error=None)
        return _Row(self.id, emptied, self.digest)


@dataclass(frozen=True, slots=True)
class _Key:
    request_hash: str
    answer: Answer | None  # None while its request runs
    expires_at: datetime


@dataclass(slots=True)
class _State:
    messages: dict[tuple[str, str], _Row] = field(default_factory=dict)
    conflicts: dict[tuple[str, str, bytes], _Row] = field(default_factory=dict)
    next_id: int = 1
    marks: dict[tuple[str, str], int] = field(default_factory=dict)
    retries: dict[tuple[str, str], RetryRecord] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(
            dict(self.messages),
            dict(self.conflicts),
            self.next_id,
            dict(self.marks),
            dict(self.retries),
        )

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class NoSql:
    """A handler's `tx` on the in-memory store: any use says why it cannot work."""

    def __getattr__(self, name: str) -> NoReturn:
        raise TypeError(
            f"tx.{name}: the in-memory store runs no SQL; test handlers that write their own "
            "tables with consumers.testing on SQLite (the default)"
        )


class MemoryTransaction:
    def __init__(self, store: MemoryStore, state: _State) -> None:
        self._store = store
        self._state = state

    @property
    def handler_tx(self) -> Any:
        return NoSql()

    async def write(
        self, records: Sequence[DeliveryRecord], persisted_at: datetime | None = None
    ) -> Conflicts:
        self._store.check()
        for record in records:
            reason = self._store.refuse(record) if self._store.refuse else None
            if reason is not None:
                raise StoreRefused(reason)
        stamped = [_stored_form(record, persisted_at) for record in records]
        messages = self._state.messages
        candidates: list[DeliveryRecord] = []
        chosen = _one_per_key(stamped, records)
        # Persisted rows go in before dead ones, as the SQL store's two statements do.
        chosen.sort(key=lambda pair: pair[1].status != "persisted")
        for original, record in chosen:
            key = (record.queue, record.message_id)
            row = messages.get(key)
            if row is None:
                messages[key] = _Row(self._state.take_id(), record)
            elif row.status == "dead_lettered" and record.status == "persisted":
                # A redriven dead letter that succeeded: a new row, after every cursor.
                messages[key] = _Row(self._state.take_id(), record)
            elif row.status == "dead_lettered":
                # Dead again: its latest error, in its old place.
                messages[key] = _Row(
                    row.id,
                    dataclasses.replace(
                        row.record,
                        attempts=record.attempts,
                        last_error=record.last_error,
                        persisted_at=record.persisted_at,
                    ),
                )
            else:
                candidates.append(original)
        candidates += [original for original, _ in _repeated(stamped, records)]
        for record in records:
            if record.attempts > 1 or record.status == "dead_lettered":
                self._state.retries.pop((record.queue, record.message_id), None)
        conflicting = [
            record
            for record in candidates
            if messages[(record.queue, record.message_id)].digest != record.body_sha256
        ]
        stamp = persisted_at or utcnow()
        for record in conflicting:
            key3 = (record.queue, record.message_id, record.body_sha256)
            if key3 not in self._state.conflicts:
                kept = _stored_form(record, stamp)
                self._state.conflicts[key3] = _Row(self._state.take_id(), kept)
        return Conflicts.among(candidates, conflicting)

    async def retrying(self, records: Sequence[RetryRecord]) -> None:
        self._store.check()
        for record in records:
            self._state.retries[(record.queue, record.message_id)] = record

    async def persisted(self, queue: str, message_ids: Collection[str]) -> set[str]:
        self._store.check()
        messages = self._state.messages
        return {
            message_id
            for message_id in message_ids
            if (row := messages.get((queue, message_id))) is not None
            and row.status in ("persisted", "expired")
        }

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        before = self._state.copy()
        try:
            yield
        except BaseException:
            self._state.messages, self._state.conflicts = before.messages, before.conflicts
            self._state.next_id, self._state.retries = before.next_id, before.retries
            raise


class MemoryStore:
    def __init__(self) -> None:
        self._state = _State()
        self._redrives: list[Redrive] = []
        self._keys: dict[str, _Key] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._pushes: dict[tuple[str, str], PushRecord] = {}
        self._writing = asyncio.Lock()
        # Fault switches: the store is out; this record cannot be stored (why, or None).
        self.down = False
        self.refuse: Callable[[DeliveryRecord], str | None] | None = None

    def check(self) -> None:
        if self.down:
            raise StoreUnavailable("the in-memory store is switched down")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        self.check()
        async with self._writing:
            working = self._state.copy()
            yield MemoryTransaction(self, working)
            self.check()  # a store that went down before the commit did not commit
            self._state = working

    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        if not records:
            return
        async with self.transaction() as tx:
            await tx.write(records)

    async def record_pushes(self, records: Sequence[PushRecord]) -> None:
        if not records:
            return
        self.check()
        async with self._writing:  # after any write transaction under way, as in SQL
            for record in records:
                key = (record.queue, record.message_id)
                self._pushes[key] = record
                row = self._state.messages.get(key)
                if record.status == "dead_lettered" and row and row.record.status == "persisted":
                    dead = dataclasses.replace(
                        row.record,
                        status="dead_lettered",
                        last_error=record.last_error,
                        attempts=record.attempts,
                        persisted_at=record.updated_at,
                    )
                    self._state.messages[key] = _Row(row.id, dead)

    async def probe(self) -> None:
        self.check()

    async def deliveries(self, message_id: str) -> list[Delivery]:
        self.check()
        rows = sorted(
            (row for row in self._state.messages.values() if row.record.message_id == message_id),
            key=lambda row: row.id,
        )
        conflicts = sorted(
            (row for row in self._state.conflicts.values() if row.record.message_id == message_id),
            key=lambda row: row.id,
        )
        found = [_delivery(row.record, row.status) for row in rows] + [
            _delivery(row.record, "conflict") for row in conflicts
        ]
        retrying = [r for r in self._state.retries.values() if r.message_id == message_id]
        return [
            dataclasses.replace(delivery, push=self._pushes.get((delivery.queue, message_id)))
            if delivery.status != "conflict"
            else delivery
            for delivery in merge_retrying(found, retrying)
        ]

    async def page(self, queue: str, after: str | None, limit: int) -> MessagePage:
        rows = self._rows(queue, "persisted", after)
        found = [_stored_message(row) for row in rows[:limit]]
        next_cursor = found[-1].cursor if len(rows) > limit else None
        oldest, gap = self._gap(queue, "persisted", after)
        return MessagePage(found, next_cursor, oldest_cursor=oldest, gap=gap)

    async def dead_letters(self, queue: str, after: str | None, limit: int) -> DeadLetterPage:
        rows = self._rows(queue, "dead_lettered", after)
        found = [_dead_letter(row) for row in rows[:limit]]
        next_cursor = found[-1].cursor if len(rows) > limit else None
        oldest, gap = self._gap(queue, "dead_lettered", after)
        return DeadLetterPage(found, next_cursor, oldest_cursor=oldest, gap=gap)

    def _gap(self, queue: str, status: str, after: str | None) -> tuple[str | None, bool]:
        return gap(self._state.marks.get((queue, status)), after)

    async def dead_letters_by_id(
        self, queue: str, message_ids: Collection[str] | None
    ) -> list[DeadLetterMessage]:
        wanted = None if message_ids is None else set(message_ids)
        return [
            _dead_letter(row)
            for row in self._rows(queue, "dead_lettered", None)
            if wanted is None or row.record.message_id in wanted
        ]

    async def record_redrives(self, redrives: Sequence[Redrive]) -> None:
        self.check()
        self._redrives += redrives

    async def redrives(self, queue: str) -> list[Redrive]:
        self.check()
        return [redrive for redrive in self._redrives if redrive.queue == queue]

    async def count(self, queue: str) -> int:
        self.check()
        return sum(queue == key[0] for key in self._state.messages)

    async def dead_letter_count(self, queue: str) -> int:
        return len(self._rows(queue, "dead_lettered", None))

    async def holds(self, queue: str) -> bool:
        self.check()
        return any(queue == key[0] for key in self._state.messages)

    async def commits_since(self, cursor: int | None) -> tuple[int, set[str]]:
        self.check()
        last = self._state.next_id - 1
        if cursor is None or last <= cursor:
            return last, set()
        return last, {row.record.queue for row in self._state.messages.values() if row.id > cursor}

    async def conflicts(self, queue: str) -> int:
        self.check()
        return sum(queue == key[0] for key in self._state.conflicts)

    async def claim(self, key: str, request_hash: str, pending_for_s: float) -> Claim | Answer:
        self.check()
        now = datetime.now(UTC)
        held = self._keys.get(key)
        if held is None or held.expires_at <= now:
            self._keys[key] = _Key(request_hash, None, now + timedelta(seconds=pending_for_s))
            return Claim.OWNED
        if held.request_hash != request_hash:
            return Claim.REUSED
        return Claim.PENDING if held.answer is None else held.answer

    async def complete(self, key: str, answer: Answer, keep_for_s: float) -> None:
        self.check()
        held = self._keys.get(key)
        if held is not None:
            expires_at = datetime.now(UTC) + timedelta(seconds=keep_for_s)
            self._keys[key] = _Key(held.request_hash, answer, expires_at)

    async def release(self, key: str) -> None:
        self.check()
        held = self._keys.get(key)
        if held is not None and held.answer is None:
            del self._keys[key]

    async def expire_before(self, queue: str, status: str, before: datetime, limit: int) -> int:
        async with self._writing:
            self.check()
            rows = sorted(
                (
                    row
                    for (row_queue, _), row in self._state.messages.items()
                    if row_queue == queue
                    and row.status == status
                    and row.record.persisted_at < before
                ),
                key=lambda row: row.record.persisted_at,
            )[:limit]
            return self._expire(queue, status, rows)

    async def oldest_kept(self, queue: str, keep: int) -> int | None:
        self.check()
        rows = self._rows(queue, "persisted", None)
        return rows[-keep].id if len(rows) > keep else None

    async def expire_until(self, queue: str, oldest_kept: int, limit: int) -> int:
        async with self._writing:
            self.check()
            rows = [row for row in self._rows(queue, "persisted", None) if row.id < oldest_kept]
            return self._expire(queue, "persisted", rows[:limit])

    def _expire(self, queue: str, status: str, rows: list[_Row]) -> int:
        for row in rows:
            self._state.messages[(queue, row.record.message_id)] = row.expired()
        if rows:
            mark = max(row.id for row in rows)
            self._state.marks[(queue, status)] = max(
                mark, self._state.marks.get((queue, status), 0)
            )
        return len(rows)

    async def forget_before(self, queue: str, before: datetime, limit: int) -> int:
        async with self._writing:
            self.check()
            state = self._state
            gone = [
                key
                for key, row in state.messages.items()
                if key[0] == queue and row.status == "expired" and row.record.persisted_at < before
            ][:limit]
            dropped = [
                key
                for key, row in state.conflicts.items()
                if key[0] == queue and row.record.persisted_at < before
            ][:limit]
            for key in gone:
                del state.messages[key]
            for key3 in dropped:
                del state.conflicts[key3]
            pushed = [
                key
                for key, push in self._pushes.items()
                if key[0] == queue and push.updated_at < before
            ][:limit]
            for push_key in pushed:
                del self._pushes[push_key]
            kept = [r for r in self._redrives if r.queue != queue or r.redriven_at >= before]
            forgotten = len(self._redrives) - len(kept)
            self._redrives = kept
            stale = [
                key
                for key, retry in state.retries.items()
                if key[0] == queue and retry.updated_at < before
            ][:limit]
            for retry_key in stale:
                del state.retries[retry_key]
            return len(gone) + len(dropped) + len(pushed) + forgotten + len(stale)

    async def purge_keys(self, now: datetime, limit: int) -> int:
        self.check()
        expired = [key for key, held in self._keys.items() if held.expires_at < now][:limit]
        for key in expired:
            del self._keys[key]
        return len(expired)

    async def hold_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        self.check()
        held = self._leases.get(name)
        if held is None or held[0] == holder or held[1] < now:
            self._leases[name] = (holder, until)
            return True
        return False

    async def release_lease(self, name: str, holder: str) -> None:
        if self._leases.get(name, ("", None))[0] == holder:
            del self._leases[name]

    async def queues(self) -> list[str]:
        self.check()
        return sorted({queue for queue, _ in self._state.messages})

    async def compact(self, pages: int) -> int:
        self.check()
        return 0

    async def checkpoint(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _rows(self, queue: str, status: str, after: str | None) -> list[_Row]:
        self.check()
        start = -1 if after is None else parse_cursor(after)
        return sorted(
            (
                row
                for (row_queue, _), row in self._state.messages.items()
                if row_queue == queue and row.status == status and row.id > start
            ),
            key=lambda row: row.id,
        )


def _stored_form(record: DeliveryRecord, persisted_at: datetime | None) -> DeliveryRecord:
    """The record as a database gives it back: its headers through JSON, its stamp."""
    headers = json.loads(json.dumps(record.headers)) if record.headers else {}
    stamp = record.persisted_at if persisted_at is None else persisted_at
    return dataclasses.replace(record, headers=headers, persisted_at=stamp)


def _one_per_key(
    stamped: Sequence[DeliveryRecord], originals: Sequence[DeliveryRecord]
) -> list[tuple[DeliveryRecord, DeliveryRecord]]:
    """One (original, stored form) per (queue, message_id), a persisted one over a dead one,
    as the SQL store's single statement does."""
    chosen: dict[tuple[str, str], tuple[DeliveryRecord, DeliveryRecord]] = {}
    for original, record in zip(originals, stamped, strict=True):
        key = (record.queue, record.message_id)
        earlier = chosen.get(key)
        if earlier is None or earlier[1].status == "dead_lettered":
            chosen[key] = (original, record)
    return list(chosen.values())


def _repeated(
    stamped: Sequence[DeliveryRecord], originals: Sequence[DeliveryRecord]
) -> list[tuple[DeliveryRecord, DeliveryRecord]]:
    chosen = {id(original) for original, _ in _one_per_key(stamped, originals)}
    return [
        (original, record)
        for original, record in zip(originals, stamped, strict=True)
        if id(original) not in chosen
    ]


def _delivery(record: DeliveryRecord, status: Any) -> Delivery:
    return Delivery(
        queue=record.queue,
        status=status,
        attempts=record.attempts,
        exchange=record.exchange,
        routing_key=record.routing_key,
        persisted_at=record.persisted_at,
    )


def _stored_message(row: _Row) -> StoredMessage:
    record = row.record
    return StoredMessage(
        cursor=str(row.id),
        message_id=record.message_id,
        exchange=record.exchange,
        routing_key=record.routing_key,
        headers=record.headers,
        content_type=record.content_type,
        body=record.body,
        attempts=record.attempts,
        persisted_at=record.persisted_at,
        content_encoding=record.content_encoding,
    )


def _dead_letter(row: _Row) -> DeadLetterMessage:
    record = row.record
    return DeadLetterMessage(
        cursor=str(row.id),
        queue=record.queue,
        message_id=record.message_id,
        exchange=record.exchange,
        routing_key=record.routing_key,
        headers=record.headers,
        content_type=record.content_type,
        body=record.body,
        attempts=record.attempts,
        last_error=record.last_error,
        dead_lettered_at=record.persisted_at,
        content_encoding=record.content_encoding,
    )
