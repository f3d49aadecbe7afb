"""Conflicting messages kept beside the first, body digests, content encodings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: nullable, so no table rewrite.
    op.add_column("messages", sa.Column("content_encoding", sa.String(255)))
    op.add_column("messages", sa.Column("body_sha256", sa.LargeBinary()))
    op.create_table(
        "conflicts",
        sa.Column("id", _row_id, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("exchange", sa.String(255), nullable=False),
        sa.Column("routing_key", sa.String(255), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("content_type", sa.String(255)),
        sa.Column("content_encoding", sa.String(255)),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "queue", "message_id", "body_sha256", name="uq_conflicts_queue_id_body"
        ),
    )
    op.create_index("ix_conflicts_message_id", "conflicts", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_conflicts_message_id", table_name="conflicts")
    op.drop_table("conflicts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("body_sha256")
        batch.drop_column("content_encoding")
