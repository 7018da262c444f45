"""A running attempt's captured output, written while it runs so ``flowkit logs --follow``
sees it before the attempt ends. Not public API.

The final output is written by the finish (``finish_attempt``'s ``output``, the generic
path, which holds the rule for every backend); this statement only refreshes the column of
an attempt that is still running on the worker writing it, so a late refresh can never
overwrite what the finish recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import update

from ..states import AttemptState
from . import tables as t

if TYPE_CHECKING:
    from .sql import SqlStore


def save_running_output(store: SqlStore, run_id: str, step: str, number: int, *, worker: str, output: str) -> bool:
    """Store the output so far of an attempt running on ``worker``; False when it no longer is."""
    a = t.attempts.c
    with store._conn() as conn:
        return bool(
            conn.execute(
                update(t.attempts)
                .where(
                    a.run_id == run_id,
                    a.step == step,
                    a.number == number,
                    a.state == AttemptState.RUNNING.value,
                    a.worker == worker,
                )
                .values(output=output)
            ).rowcount
        )
