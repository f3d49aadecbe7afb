"""The last push outcome of each message of a queue with a push subscription.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A table of its own: nothing is rewritten in `messages`, and a store without
    # subscriptions never writes to it.
    op.create_table(
        "pushes",
        sa.Column("id", _row_id, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("queue", "message_id", name="uq_pushes_queue_message_id"),
    )
    op.create_index("ix_pushes_message_id", "pushes", ["message_id"])
    op.create_index("ix_pushes_queue_updated_at", "pushes", ["queue", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_pushes_queue_updated_at", table_name="pushes")
    op.drop_index("ix_pushes_message_id", table_name="pushes")
    op.drop_table("pushes")
