"""The store seam: the consumer runtime and the gateway depend on this, not on SQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.store.records import (
    DeadLetterMessage,
    DeadLetterPage,
    Delivery,
    DeliveryRecord,
    MessagePage,
    Redrive,
)


class Store(Protocol):
    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        """Persist the records in one transaction (see `write`). Raises `StoreUnavailable`
        when the commit did not happen."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """One write transaction, committed on leaving the block; user handlers write in it.
        Raises `StoreUnavailable` when the store cannot be reached or cannot commit."""
        ...

    async def write(
        self,
        tx: AsyncConnection,
        records: Sequence[DeliveryRecord],
        persisted_at: datetime | None = None,
    ) -> None:
        """Insert the records. A record already persisted for its queue is skipped, not an
        error; one stored as dead-lettered is replaced (a redriven message that succeeded).
        `persisted_at`, when given, is stamped on every row instead of the records' own."""
        ...

    async def persisted(
        self, tx: AsyncConnection, queue: str, message_ids: Collection[str]
    ) -> set[str]:
        """Which of `message_ids` this queue has already persisted (not dead-lettered)."""
        ...

    def is_outage(self, exc: BaseException) -> bool:
        """Whether `exc` means the store is unreachable, rather than a bug or bad data."""
        ...

    async def deliveries(self, message_id: str) -> list[Delivery]: ...

    async def page(self, queue: str, after: str | None, limit: int) -> MessagePage:
        """Stored messages of `queue` after the cursor `after`, in the order they were stored."""
        ...

    async def dead_letters(self, queue: str, after: str | None, limit: int) -> DeadLetterPage:
        """Dead-lettered messages of `queue` after the cursor `after`, oldest first."""
        ...

    async def dead_letters_by_id(
        self, queue: str, message_ids: Collection[str] | None
    ) -> list[DeadLetterMessage]:
        """The dead letters of `queue` with these ids (all of them for None)."""
        ...

    async def record_redrives(self, redrives: Sequence[Redrive]) -> None: ...

    async def count(self, queue: str) -> int: ...

    async def close(self) -> None: ...
