"""runs.followups: finishes whose follow-up transaction has not run yet (the sweep's net)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as b:
        b.add_column(sa.Column("followups", sa.Integer(), nullable=False, server_default="0"))
    # Partial: it holds only the runs a worker may have left a decision to (almost none).
    op.create_index(
        "ix_runs_followups",
        "runs",
        ["id"],
        postgresql_where=sa.text("followups > 0"),
        sqlite_where=sa.text("followups > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_followups", table_name="runs")
    # recreate='never': see 0007 (a rebuilt table would cascade-delete its children's rows).
    with op.batch_alter_table("runs", recreate="never") as b:
        b.drop_column("followups")
