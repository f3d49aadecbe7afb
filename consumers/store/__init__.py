"""Where consumers persist messages, and where the gateway reads them back."""

from consumers.store.protocol import Store
from consumers.store.records import Delivery, DeliveryRecord, MessagePage, StoredMessage
from consumers.store.sql import SqlStore, open_store

__all__ = [
    "Delivery",
    "DeliveryRecord",
    "MessagePage",
    "SqlStore",
    "Store",
    "StoredMessage",
    "open_store",
]
