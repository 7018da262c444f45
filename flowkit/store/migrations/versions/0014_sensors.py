"""sensors: what a sensor step's wait has done so far (first poke, pokes, the last poke's
time and answer, when it times out), on step_runs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_COLUMNS = (
    ("sensor_first_poke_at", _TS),
    ("sensor_first_attempt", sa.Integer()),
    ("sensor_pokes", sa.Integer()),
    ("sensor_last_poke_at", _TS),
    ("sensor_last_said", sa.Text()),
    ("sensor_timeout_at", _TS),
)


def upgrade() -> None:
    # Nullable columns only: SQLite adds them in place (no table rebuild, which would
    # cascade-delete the rows of the tables that reference step_runs' run).
    with op.batch_alter_table("step_runs", recreate="never") as b:
        for name, kind in _COLUMNS:
            b.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_runs", recreate="never") as b:
        for name, _ in reversed(_COLUMNS):
            b.drop_column(name)
