"""The store's one schema, shared by SQLite and PostgreSQL; alembic migrations create it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_row_id = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("exchange", String(255), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("headers", JSON, nullable=False),
    Column("content_type", String(255)),
    Column("body", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("last_error", Text),
    Column("published_at", DateTime(timezone=True)),
    Column("persisted_at", DateTime(timezone=True), nullable=False),
    # A redelivery of a message its queue already stored must add no row.
    UniqueConstraint("queue", "message_id", name="uq_messages_queue_message_id"),
    Index("ix_messages_message_id", "message_id"),
)

# Idempotency-Key answers, kept durably so a retry reaching another gateway replica is
# recognised too. `request_hash` tells a true repeat from a reuse of the key (409).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

# Who re-published which dead letter, and when.
redrives = Table(
    "redrives",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("exchange", String(255), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("redriven_by", String(255), nullable=False),
    Column("redriven_at", DateTime(timezone=True), nullable=False),
    Index("ix_redrives_queue_message_id", "queue", "message_id"),
)
