"""Retention: the indexes listing and expiry need, expiry marks, leases.

On a large PostgreSQL table, `CREATE INDEX` holds off writes while it builds (seconds per
million rows). To avoid that, build the indexes beforehand with
`CREATE INDEX CONCURRENTLY` under the same names; this migration then skips them
(docs/operations.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_messages_queue_status_id", "messages", ["queue", "status", "id"]),
    ("ix_messages_queue_status_persisted_at", "messages", ["queue", "status", "persisted_at"]),
    ("ix_conflicts_queue_persisted_at", "conflicts", ["queue", "persisted_at"]),
    ("ix_redrives_queue_redriven_at", "redrives", ["queue", "redriven_at"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns, if_not_exists=True)
    op.create_table(
        "expiry_marks",
        sa.Column("queue", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("through_id", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("expiry_marks")
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
