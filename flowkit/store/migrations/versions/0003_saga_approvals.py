"""runs.outcome: how a failed run's compensation ended

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: runs stored before it had no compensation.
    with op.batch_alter_table("runs") as b:
        b.add_column(sa.Column("outcome", sa.String(length=30), nullable=True))


def downgrade() -> None:
    # recreate='never': ALTER TABLE ... DROP COLUMN (SQLite >= 3.35). Rebuilding the table
    # instead would drop it with foreign keys on, and cascade-delete its children's rows.
    with op.batch_alter_table("runs", recreate="never") as b:
        b.drop_column("outcome")
