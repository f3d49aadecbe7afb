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
    # persisted, dead_lettered, or expired: the key row left of a message whose body and
    # headers went under its queue's retention, kept for the dedupe window.
    Column("status", String(16), nullable=False),
    Column("last_error", Text),
    Column("published_at", DateTime(timezone=True)),
    Column("persisted_at", DateTime(timezone=True), nullable=False),
    Column("content_encoding", String(255)),
    # SHA-256 of the body: a redelivery has the same, a conflict another (NULL on rows
    # stored before 0003, whose body is compared instead).
    Column("body_sha256", LargeBinary),
    # A redelivery of a message its queue already stored must add no row.
    UniqueConstraint("queue", "message_id", name="uq_messages_queue_message_id"),
    Index("ix_messages_message_id", "message_id"),
    # A queue's listing and its dead letters: equality on both, already in cursor order,
    # so neither a sort nor a walk of other queues' rows (nor a generic plan) is needed.
    Index("ix_messages_queue_status_id", "queue", "status", "id"),
    # Expiry: a queue's rows of one status older than a moment, oldest first.
    Index("ix_messages_queue_status_persisted_at", "queue", "status", "persisted_at"),
)

# Messages that came with an id their queue had stored already, for another body: kept
# beside the first instead of being dropped as duplicates. A redelivery of the same
# conflicting message adds no second row.
conflicts = Table(
    "conflicts",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("exchange", String(255), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("headers", JSON, nullable=False),
    Column("content_type", String(255)),
    Column("content_encoding", String(255)),
    Column("body", LargeBinary, nullable=False),
    Column("body_sha256", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("persisted_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("queue", "message_id", "body_sha256", name="uq_conflicts_queue_id_body"),
    Index("ix_conflicts_message_id", "message_id"),
    Index("ix_conflicts_queue_persisted_at", "queue", "persisted_at"),
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
    Index("ix_redrives_queue_redriven_at", "queue", "redriven_at"),
)

# Per queue and status, the last cursor whose message expired: a reader behind it is told
# it missed messages (a gap), even after their key rows are gone.
expiry_marks = Table(
    "expiry_marks",
    metadata,
    Column("queue", String(255), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("through_id", BigInteger, nullable=False),
)

# Who does a deployment-wide chore (the retention sweep, the key purge) until when: one
# process at a time, whichever holds the lease, however many run.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# The last push of each message of a queue with a subscription (docs/push.md): one row
# per message, replaced by every attempt; a push dead letter also marks its `messages` row.
pushes = Table(
    "pushes",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("queue", "message_id", name="uq_pushes_queue_message_id"),
    Index("ix_pushes_message_id", "message_id"),
    # Retention forgets a queue's push outcomes with its key rows.
    Index("ix_pushes_queue_updated_at", "queue", "updated_at"),
)

# Messages on their queue's retry ladder (`GET /v1/messages/{id}` says `retrying`): one row
# per message, replaced by every failed attempt, deleted once the message is stored or
# dead-lettered. Written in the batch's transaction, so before the ack.
retries = Table(
    "retries",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("exchange", String(255), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("queue", "message_id", name="uq_retries_queue_message_id"),
    Index("ix_retries_message_id", "message_id"),
)
