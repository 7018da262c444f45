"""helper modules pinned with flow versions; the callbacks outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("dag_files") as b:
        b.add_column(sa.Column("helpers", sa.Text(), nullable=True))
    op.create_table(
        "module_sources",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_module_sources")),
    )
    op.create_table(
        "flow_modules",
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("package", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("flow_name", "version", "name", name=op.f("pk_flow_modules")),
        sa.ForeignKeyConstraint(
            ["flow_name", "version"],
            ["flow_versions.flow_name", "flow_versions.version"],
            name=op.f("fk_flow_modules_flow_name_flow_versions"),
        ),
        sa.ForeignKeyConstraint(["hash"], ["module_sources.hash"], name=op.f("fk_flow_modules_hash_module_sources")),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step", sa.String(100), nullable=True),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("dispatched_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE", name=op.f("fk_callbacks_run_id_runs")),
    )
    op.create_index("ix_callbacks_pending", "callbacks", ["done_at", "dispatched_at"])


def downgrade() -> None:
    # recreate='never': ALTER TABLE ... DROP COLUMN (SQLite >= 3.35). Rebuilding the table
    # instead would drop it with foreign keys on, and cascade-delete its children's rows.
    op.drop_index("ix_callbacks_pending", table_name="callbacks")
    op.drop_table("callbacks")
    op.drop_table("flow_modules")
    op.drop_table("module_sources")
    with op.batch_alter_table("dag_files", recreate="never") as b:
        b.drop_column("helpers")
