"""attempts.output: the end of a shell step's output

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as b:
        b.add_column(sa.Column("output", sa.Text(), nullable=True))


def downgrade() -> None:
    # recreate='never': ALTER TABLE ... DROP COLUMN (SQLite >= 3.35). Rebuilding the table
    # instead would drop it with foreign keys on, and cascade-delete its children's rows.
    with op.batch_alter_table("attempts", recreate="never") as b:
        b.drop_column("output")
