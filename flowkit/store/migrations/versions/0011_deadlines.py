"""deadlines: per-step duration statistics, SLA marks (once-only at-risk/missed) and the
sweep's cursor over finished attempts

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_duration_stats",
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("durations", sa.Text(), nullable=False),
        sa.Column("queue_waits", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("flow_name", "step", name="pk_step_duration_stats"),
    )
    op.create_table(
        "sla_marks",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("step", sa.String(100), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_sla_marks"),
    )
    op.create_table(
        "sla_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sla_cursor"),
    )
    op.create_index("ix_attempts_ended_at", "attempts", ["ended_at", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_attempts_ended_at", table_name="attempts")
    op.drop_table("sla_cursor")
    op.drop_table("sla_marks")
    op.drop_table("step_duration_stats")
