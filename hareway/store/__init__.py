"""Where consumers persist messages, and where the gateway reads them back.

Both processes import it: the consumers write through `Inbox`, the gateway reads through
`Messages` and keeps Idempotency-Keys through `IdempotencyKeys` (hareway/store/protocol.py).
`open_store` gives the SQL store (SQLite or PostgreSQL, migrated); `MemoryStore` keeps
the same contract in memory, for tests.
"""

from hareway.store.errors import InvalidCursor, StoreError, StoreRefused, StoreUnavailable
from hareway.store.memory import MemoryStore
from hareway.store.protocol import IdempotencyKeys, Inbox, Messages, Store, Transaction
from hareway.store.records import (
    Answer,
    Claim,
    DeadLetterMessage,
    DeadLetterPage,
    Delivery,
    DeliveryRecord,
    MessagePage,
    PushRecord,
    Redrive,
    StoredMessage,
)
from hareway.store.sql import SqlStore, SqlTransaction, open_store

__all__ = [
    "Answer",
    "Claim",
    "DeadLetterMessage",
    "DeadLetterPage",
    "Delivery",
    "DeliveryRecord",
    "IdempotencyKeys",
    "Inbox",
    "InvalidCursor",
    "MemoryStore",
    "MessagePage",
    "Messages",
    "PushRecord",
    "Redrive",
    "SqlStore",
    "SqlTransaction",
    "Store",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "StoredMessage",
    "Transaction",
    "open_store",
]
