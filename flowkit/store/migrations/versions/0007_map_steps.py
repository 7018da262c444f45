"""map steps: instance rows and their map step's counters on step_runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INTEGERS = ("map_index", "map_total", "map_left", "map_failed", "map_next")


def upgrade() -> None:
    # All nullable: rows of runs stored before map steps existed stay as they are.
    with op.batch_alter_table("step_runs") as b:
        b.add_column(sa.Column("map_parent", sa.String(length=100), nullable=True))
        b.add_column(sa.Column("map_item", sa.Text(), nullable=True))
        for name in _INTEGERS:
            b.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    # recreate='never': ALTER TABLE ... DROP COLUMN (SQLite >= 3.35). Rebuilding the table
    # instead would drop it with foreign keys on, and cascade-delete its children's rows.
    with op.batch_alter_table("step_runs", recreate="never") as b:
        for name in reversed(_INTEGERS):
            b.drop_column(name)
        b.drop_column("map_item")
        b.drop_column("map_parent")
