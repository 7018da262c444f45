"""an index of pending steps whose upstreams are all counted (the sweep's safety net)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

#: A pending step whose upstreams have all ended is decided at once by whoever counted the
#: last one; a row stays like this only if that actor died first. Partial: the index holds
#: those rows alone, so the sweep finds them without reading every pending step.
READY_PENDING = "state = 'pending' AND n_up > 0 AND ok_up + bad_up + skip_up >= n_up"


def upgrade() -> None:
    op.create_index('ix_step_runs_ready_pending', 'step_runs', ['run_id'],
                    postgresql_where=sa.text(READY_PENDING), sqlite_where=sa.text(READY_PENDING))


def downgrade() -> None:
    op.drop_index('ix_step_runs_ready_pending', table_name='step_runs')
