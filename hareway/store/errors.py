"""What the store raises: every database error is mapped to one of these at the store's
edge (`hareway.store.faults` decides which), so no caller sees SQLAlchemy's classes, SQL
text or parameters."""

from __future__ import annotations

from hareway.errors import HarewayError


class StoreError(HarewayError):
    """Base of the store's errors; the message is the driver's own words, first line only."""


class StoreUnavailable(StoreError):
    """The store cannot answer or commit now (down, locked, full): retry later. What a
    failed write held stays unacknowledged or unanswered."""


class StoreRefused(StoreError):
    """The store refuses these values and always will (NUL in text, a value too long, a
    broken constraint): retrying the same thing changes nothing."""


class InvalidCursor(StoreError):
    """A read cursor that this store did not hand out."""
