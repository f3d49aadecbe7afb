"""Where consumers persist messages, and where the gateway reads them back."""

from consumers.store.protocol import Store
from consumers.store.records import (
    DeadLetterMessage,
    DeadLetterPage,
    Delivery,
    DeliveryRecord,
    MessagePage,
    Redrive,
    StoredMessage,
)
from consumers.store.sql import SqlStore, open_store

__all__ = [
    "DeadLetterMessage",
    "DeadLetterPage",
    "Delivery",
    "DeliveryRecord",
    "MessagePage",
    "Redrive",
    "SqlStore",
    "Store",
    "StoredMessage",
    "open_store",
]
