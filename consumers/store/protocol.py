"""The store seam: the consumer runtime and the gateway depend on this, not on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consumers.store.records import Delivery, DeliveryRecord, MessagePage


class Store(Protocol):
    async def save(self, records: Sequence[DeliveryRecord]) -> None:
        """Persist the records in one transaction; a record already stored for its queue is
        skipped, not an error. Raises `StoreUnavailable` when the commit did not happen."""
        ...

    async def deliveries(self, message_id: str) -> list[Delivery]: ...

    async def page(self, queue: str, after: str | None, limit: int) -> MessagePage:
        """Stored messages of `queue` after the cursor `after`, in the order they were stored."""
        ...

    async def count(self, queue: str) -> int: ...

    async def close(self) -> None: ...
