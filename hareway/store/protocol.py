"""The store seams: the consumer runtime and the gateway depend on these, not on SQL.

Small protocols, one per use, in hareway's own types: `Inbox` is what a consumer writes
through, `Messages` what the gateway reads, `IdempotencyKeys` the gateway's keys,
`Sweeps` the retention chores either side runs; `Store` is all of them, as `open_store`
and `MemoryStore` give it. Every method raises only `hareway.store.errors`
(`StoreUnavailable` for an outage, `StoreRefused` for values the store will never take),
never a driver's error.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

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
)


class Transaction(Protocol):
    """One write transaction: committed when its block ends, rolled back if it raises."""

    async def write(
        self, records: Sequence[DeliveryRecord], persisted_at: datetime | None = None
    ) -> Conflicts:
        """Insert the records. A record already persisted for its queue is skipped, not an
        error; one stored as dead-lettered is replaced (a redriven message that succeeded).
        `persisted_at`, when given, is stamped on every row instead of the records' own.

        Returns the conflicts: records whose id their queue already holds for another body.
        They are kept beside the first (reported as `conflict`), never dropped. Its
        `duplicates` counts the persisted records skipped for being stored already."""
        ...

    async def retrying(self, records: Sequence[RetryRecord]) -> None:
        """Keep that these messages went down their queue's retry ladder (replacing the
        previous attempt's record); `write` of a message's later outcome drops it."""
        ...

    async def persisted(self, queue: str, message_ids: Collection[str]) -> set[str]:
        """Which of `message_ids` this queue has already persisted (not dead-lettered)."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: what happens in it is taken back if its block raises,
        while the outer transaction goes on."""
        ...

    @property
    def handler_tx(self) -> Any:
        """What a user handler gets as `tx`: for the SQL store, the SQLAlchemy
        `AsyncConnection` of this transaction, so the handler's writes commit with it."""
        ...


class Inbox(Protocol):
    """Where a consumer commits its batches."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One write transaction, committed on leaving the block. Raises `StoreUnavailable`
        when the store cannot be reached or cannot commit, `StoreRefused` when it refuses
        what was written."""
        ...

    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        """Persist the records in one transaction (see `Transaction.write`)."""
        ...

    async def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Keep each message's latest push outcome, in one transaction; a `dead_lettered`
        one also makes its persisted row a dead letter (listed and redriven as such)."""
        ...

    async def probe(self) -> None:
        """Raise `StoreUnavailable` unless the store can take a write now: tells a message
        the store refuses from a store that refuses everything (down, or its table gone)."""
        ...


class Messages(Protocol):
    """What the gateway reads back: where messages are, queues' messages, dead letters."""

    async def deliveries(self, message_id: str) -> list[Delivery]:
        """Every queue's record of the message, conflicts last; with its push outcome for
        a queue with a subscription."""
        ...

    async def page(self, queue: str, after: str | None, limit: int) -> MessagePage:
        """Stored messages of `queue` after the cursor `after`, in the order they were stored."""
        ...

    async def dead_letters(self, queue: str, after: str | None, limit: int) -> DeadLetterPage:
        """Dead-lettered messages of `queue` after the cursor `after`, oldest first."""
        ...

    async def dead_letters_by_id(
        self, queue: str, message_ids: Collection[str] | None
    ) -> list[DeadLetterMessage]:
        """The dead letters of `queue` with these ids (all of them for None), oldest first."""
        ...

    async def record_redrives(self, redrives: Sequence[Redrive]) -> None:
        """Log who re-published which dead letter."""
        ...

    async def redrives(self, queue: str) -> list[Redrive]:
        """The redrive log of `queue`, oldest first."""
        ...

    async def count(self, queue: str) -> int:
        """Rows of `queue`, persisted and dead-lettered."""
        ...

    async def dead_letter_count(self, queue: str) -> int:
        """Dead letters of `queue` not expired (what `dead_letters` would page through)."""
        ...

    async def holds(self, queue: str) -> bool:
        """Whether the store has any row of `queue` (a queue it knows)."""
        ...

    async def commits_since(self, cursor: int | None) -> tuple[int, set[str]]:
        """The store's last cursor, and the queues with rows stored after `cursor` (None:
        just the last cursor). What a poller of new commits asks (hareway/store/commits.py)."""
        ...

    async def conflicts(self, queue: str) -> int:
        """Conflicts kept for `queue`."""
        ...


class IdempotencyKeys(Protocol):
    """Idempotency-Key answers, shared by every gateway replica on the same store."""

    async def claim(self, key: str, request_hash: str, pending_for_s: float) -> Claim | Answer:
        """Take the key for a request (`Claim.OWNED`, held for `pending_for_s` unless
        completed or released), or say who has it: `Claim.PENDING` (another request with
        the same body still runs), `Claim.REUSED` (it was used for another body), or the
        earlier `Answer` to replay. An expired key is taken over."""
        ...

    async def complete(self, key: str, answer: Answer, keep_for_s: float) -> None:
        """Keep the answer of the request that owns `key` for `keep_for_s`."""
        ...

    async def release(self, key: str) -> None:
        """Free a key still pending, so a retry publishes again."""
        ...


class Sweeps(Protocol):
    """The retention chores, each one short transaction over at most `limit` rows; the
    janitor (hareway/store/janitor.py) paces them."""

    async def expire_before(self, queue: str, status: str, before: datetime, limit: int) -> int:
        """The oldest rows of `queue` in `status` stored before `before` keep only their key
        (status `expired`); how many."""
        ...

    async def oldest_kept(self, queue: str, keep: int) -> int | None:
        """The row id of the oldest of the queue's newest `keep` persisted rows; None while
        it has no more than `keep`."""
        ...

    async def expire_until(self, queue: str, oldest_kept: int, limit: int) -> int:
        """Stage one for `max_rows`: the persisted rows of `queue` stored before the row
        `oldest_kept`, oldest first; how many."""
        ...

    async def forget_before(self, queue: str, before: datetime, limit: int) -> int:
        """Delete the key rows, conflicts, redrive records, push outcomes and retry records
        of `queue` from before `before`; how many rows went."""
        ...

    async def purge_keys(self, now: datetime, limit: int) -> int:
        """Delete Idempotency-Keys expired by `now`, oldest first; how many."""
        ...

    async def hold_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Take or renew the lease `name` for `holder` until `until`; False while another
        holder's lease runs."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def queues(self) -> list[str]:
        """Every queue the store holds rows of."""
        ...

    async def compact(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system, where the store can; how
        many it gave."""
        ...

    async def checkpoint(self) -> None:
        """Copy what the write-ahead log holds into the store, without waiting for anyone,
        where the store does that itself inside some writer's commit otherwise (SQLite)."""
        ...


class Store(Inbox, Messages, IdempotencyKeys, Sweeps, Protocol):
    async def close(self) -> None: ...
