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
