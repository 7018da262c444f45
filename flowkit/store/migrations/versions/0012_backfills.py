"""backfills: a backfill per row (range, reprocess choice, run cap, direction, cursor), the
runs.backfill_id that puts a run in its backfill's lane, and schedule_skips (intervals an
overlap=skip policy dropped)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("range_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("range_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reprocess", sa.String(10), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=False),
        sa.Column("backwards", sa.Boolean(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("handed", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_backfills"),
    )
    op.create_index("ix_backfills_state", "backfills", ["state"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("backfill_id", sa.Integer(), nullable=True))
    op.create_index("ix_runs_backfill_state", "runs", ["backfill_id", "state"])
    op.create_table(
        "schedule_skips",
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("logical_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("flow_name", "logical_date", name="pk_schedule_skips"),
    )


def downgrade() -> None:
    op.drop_table("schedule_skips")
    op.drop_index("ix_runs_backfill_state", table_name="runs")
    # recreate='never': see 0007 (a rebuilt table would cascade-delete its children's rows).
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.drop_column("backfill_id")
    op.drop_index("ix_backfills_state", table_name="backfills")
    op.drop_table("backfills")
