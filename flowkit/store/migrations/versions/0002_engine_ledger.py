"""readiness counters, the slot ledger and scheduler membership

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as b:
        b.add_column(sa.Column("steps_left", sa.Integer(), nullable=True))
        b.add_column(sa.Column("waits", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("step_runs") as b:
        for name in ("n_up", "ok_up", "bad_up", "skip_up", "priority"):
            b.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("wait_seq", sa.Integer(), nullable=True))
        b.create_index("ix_step_runs_waiting", ["state", "priority", "wait_seq"])
    with op.batch_alter_table("attempts") as b:
        b.add_column(sa.Column("holds", sa.Text(), nullable=True))
        b.add_column(sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "limits",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_limits")),
    )
    op.create_table(
        "schedulers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_loop_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stats", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedulers")),
    )


def downgrade() -> None:
    op.drop_table("schedulers")
    op.drop_table("limits")
    with op.batch_alter_table("attempts") as b:
        b.drop_column("interruptions")
        b.drop_column("holds")
    with op.batch_alter_table("step_runs") as b:
        b.drop_index("ix_step_runs_waiting")
        for name in ("wait_seq", "priority", "skip_up", "bad_up", "ok_up", "n_up"):
            b.drop_column(name)
    with op.batch_alter_table("runs") as b:
        b.drop_column("waits")
        b.drop_column("steps_left")
