"""scheduler_lease: the active scheduler's lease (holder, fencing token, expiry); schedulers
record their effective settings and a clean stop

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        # Unique on purpose: a takeover then changes a key column, so its row lock conflicts
        # with the active scheduler's FOR KEY SHARE guard, while renewals (expiry only) do not.
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_lease"),
        sa.UniqueConstraint("token", name="uq_scheduler_lease_token"),
    )
    with op.batch_alter_table("schedulers") as b:
        b.add_column(sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("config", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedulers") as b:
        b.drop_column("config")
        b.drop_column("stopped_at")
    op.drop_table("scheduler_lease")
