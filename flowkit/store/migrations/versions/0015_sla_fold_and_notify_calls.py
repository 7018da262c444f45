"""sla fold marks and callable notifiers: ``attempts.sla_folded`` (with a partial index on
the ended attempts not folded yet) replaces the sweep's cursor over ``ended_at``, which a
late commit or a worker's slow clock could slip behind; ``callbacks`` may carry a
notification (``payload``) and need not belong to a run (a missed scheduled interval)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("sla_folded", sa.Boolean(), nullable=False, server_default=sa.false()))
    # What the old cursor had folded stays folded; the rest is folded by the next sweeps.
    op.execute(
        "UPDATE attempts SET sla_folded = (SELECT ended_at FROM sla_cursor WHERE id = 1) >= attempts.ended_at "
        "WHERE ended_at IS NOT NULL AND EXISTS (SELECT 1 FROM sla_cursor WHERE id = 1)"
    )
    op.create_index(
        "ix_attempts_unfolded",
        "attempts",
        ["ended_at"],
        postgresql_where=sa.text("ended_at IS NOT NULL AND sla_folded = false"),
        sqlite_where=sa.text("ended_at IS NOT NULL AND sla_folded = 0"),
    )
    op.drop_table("sla_cursor")
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.String(36), nullable=True)
        batch_op.add_column(sa.Column("payload", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM callbacks WHERE run_id IS NULL")
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.drop_column("payload")
        batch_op.alter_column("run_id", existing_type=sa.String(36), nullable=False)
    op.create_table(
        "sla_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sla_cursor"),
    )
    op.drop_index("ix_attempts_unfolded", table_name="attempts")
    op.drop_column("attempts", "sla_folded")
