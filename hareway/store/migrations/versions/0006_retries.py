"""Messages on their queue's retry ladder, reported as `retrying`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A table of its own, small (only what is on a ladder now): `messages` is not rewritten.
    op.create_table(
        "retries",
        sa.Column("id", _row_id, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("exchange", sa.String(255), nullable=False),
        sa.Column("routing_key", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("queue", "message_id", name="uq_retries_queue_message_id"),
    )
    op.create_index("ix_retries_message_id", "retries", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_retries_message_id", table_name="retries")
    op.drop_table("retries")
