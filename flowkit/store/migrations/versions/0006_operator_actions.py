"""operator actions: a step's retry base, and events of a flow (pause, unpause)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_runs") as b:
        # runs stored before this migration never had an operator's retry: base 0
        b.add_column(sa.Column("retry_base", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("events") as b:
        b.add_column(sa.Column("flow_name", sa.String(length=100), nullable=True))
        b.create_index("ix_events_flow", ["flow_name", "id"])


def downgrade() -> None:
    # recreate='never': ALTER TABLE ... DROP COLUMN (SQLite >= 3.35). Rebuilding the table
    # instead would drop it with foreign keys on, and cascade-delete its children's rows.
    with op.batch_alter_table("events", recreate="never") as b:
        b.drop_index("ix_events_flow")
        b.drop_column("flow_name")
    with op.batch_alter_table("step_runs", recreate="never") as b:
        b.drop_column("retry_base")
