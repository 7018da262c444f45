"""triggers: subscriptions of flows to flow ends and dataset writes, and the inbox of
trigger events each consumed once

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_subscriptions",
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("target_flow", sa.String(100), nullable=False),
        sa.Column("states", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("kind", "source", "target_flow", name="pk_trigger_subscriptions"),
    )
    op.create_table(
        "trigger_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_flow", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("source_run_id", sa.String(36), nullable=False),
        sa.Column("source_step", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_run_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_inbox"),
        sa.UniqueConstraint("target_flow", "event_key", name="uq_trigger_inbox_target_event"),
    )
    op.create_index(
        "ix_trigger_inbox_pending",
        "trigger_inbox",
        ["target_flow", "id"],
        postgresql_where=sa.text("consumed_at IS NULL"),
        sqlite_where=sa.text("consumed_at IS NULL"),
    )
    op.create_index("ix_trigger_inbox_source_run", "trigger_inbox", ["source_run_id"])
    op.create_index("ix_trigger_inbox_consumed_run", "trigger_inbox", ["consumed_run_id"])


def downgrade() -> None:
    op.drop_index("ix_trigger_inbox_consumed_run", table_name="trigger_inbox")
    op.drop_index("ix_trigger_inbox_source_run", table_name="trigger_inbox")
    op.drop_index("ix_trigger_inbox_pending", table_name="trigger_inbox")
    op.drop_table("trigger_inbox")
    op.drop_table("trigger_subscriptions")
