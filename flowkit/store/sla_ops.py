"""The store side of deadlines (flowkit.sla): fold successful attempts into the per-step
statistics, read them back, and raise an SLA action once (a ``sla_marks`` row plus the
audit event, in one transaction). Module functions over a store, so ``SqlStore`` stays as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import false, select, update

from ..sla.deadline import as_utc
from ..sla.history import WINDOW_RUNS, StepStats
from . import tables as t
from .base import upsert

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .sql import SqlStoreBase

#: Successful attempts folded per call: a sweep's work stays bounded after a long outage.
FOLD_BATCH = 500


def mark_key(action: str, flow: str, run_id: str | None, step: str | None, logical_date: datetime | None) -> str:
    """The once-only key of an SLA action: per run (and step), or per missed scheduled interval."""
    due = as_utc(logical_date).isoformat() if logical_date is not None else ""
    return "|".join((action, flow, run_id or "", step or "", due))


def raise_once(
    store: SqlStoreBase,
    actor: str,
    now: datetime,
    *,
    action: str,
    flow: str,
    reason: str,
    run_id: str | None = None,
    step: str | None = None,
    logical_date: datetime | None = None,
) -> bool:
    """Record ``action`` and its audit event unless it was raised before; True if raised now."""
    from sqlalchemy.dialects import postgresql, sqlite

    with store.tx(actor, now) as tx:
        dialect_insert: Any = postgresql.insert if tx.conn.dialect.name == "postgresql" else sqlite.insert
        key = mark_key(action, flow, run_id, step, logical_date)
        row = {"key": key, "action": action, "flow_name": flow, "run_id": run_id, "step": step, "at": now}
        insert = dialect_insert(t.sla_marks).values(**row).on_conflict_do_nothing()
        # RETURNING, not rowcount: psycopg does not report rowcount for this statement
        if tx.conn.execute(insert.returning(t.sla_marks.c.key)).first() is None:
            return False
        tx.event(action, run_id=run_id, step=step, flow=flow, reason=reason)
        return True


def raised_marks(store: SqlStoreBase, run_ids: Iterable[str]) -> set[tuple[str, str | None, str]]:
    """(run id, step, action) of the SLA actions already raised for these runs."""
    ids = list(run_ids)
    if not ids:
        return set()
    with store._conn() as conn:
        rows = conn.execute(
            select(t.sla_marks.c.run_id, t.sla_marks.c.step, t.sla_marks.c.action).where(t.sla_marks.c.run_id.in_(ids))
        )
        return {(r.run_id, r.step, r.action) for r in rows}


def step_stats(store: SqlStoreBase, flow: str) -> dict[str, StepStats]:
    with store._conn() as conn:
        rows = conn.execute(select(t.step_duration_stats).where(t.step_duration_stats.c.flow_name == flow))
        return {r.step: StepStats(tuple(json.loads(r.durations)), tuple(json.loads(r.queue_waits))) for r in rows}


def fold_successes(store: SqlStoreBase, now: datetime, *, batch: int = FOLD_BATCH, window: int = WINDOW_RUNS) -> int:
    """Fold the ended attempts not folded yet into the per-step statistics and mark them folded.

    Reads at most ``batch`` of them through the partial index ``ix_attempts_unfolded`` and
    updates one fixed-size row per (flow, step): the work per step end is constant. A mark
    per attempt, not a cursor over ``ended_at``: an attempt committed late (or stamped by a
    worker whose clock is behind) is still unfolded when it shows up, so none is skipped.
    Returns how many attempts it read.
    """
    a = t.attempts
    with store._conn() as conn:
        query = (
            select(
                a.c.step, a.c.task_id, a.c.dispatched_at, a.c.started_at, a.c.ended_at, a.c.state, t.runs.c.flow_name
            )
            .join(t.runs, t.runs.c.id == a.c.run_id)
            .where(a.c.ended_at.is_not(None), a.c.sla_folded == false())
            .order_by(a.c.ended_at)
            .limit(batch)
        )
        rows = conn.execute(query).all()
        if not rows:
            return 0
        # Claim before folding (compare-and-set on the mark): of two sweeps that read the
        # same attempts, each folds only those it marked, so no sample counts twice.
        mine = set(
            conn.execute(
                update(a)
                .where(a.c.task_id.in_([r.task_id for r in rows]), a.c.sla_folded == false())
                .values(sla_folded=True)
                .returning(a.c.task_id)
            ).scalars()
        )
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in rows:
            if r.task_id in mine and r.state == "success" and r.started_at is not None:
                run = (as_utc(r.ended_at) - as_utc(r.started_at)).total_seconds()
                wait = (as_utc(r.started_at) - as_utc(r.dispatched_at)).total_seconds()
                samples.setdefault((r.flow_name, base_step(r.step)), []).append((run, wait))
        for (flow, step), new in sorted(samples.items()):  # in key order: two sweeps lock alike
            _fold_step(conn, flow, step, new, now, window)
        return len(rows)


def _fold_step(
    conn: Connection, flow: str, step: str, new: list[tuple[float, float]], now: datetime, window: int
) -> None:
    key = (t.step_duration_stats.c.flow_name == flow, t.step_duration_stats.c.step == step)
    row = conn.execute(select(t.step_duration_stats).where(*key).with_for_update()).first()
    stats = StepStats(tuple(json.loads(row.durations)), tuple(json.loads(row.queue_waits))) if row else StepStats()
    for run, wait in new:
        stats = stats.record(run, wait, window=window)
    values = {
        "flow_name": flow,
        "step": step,
        "durations": json.dumps(stats.durations),
        "queue_waits": json.dumps(stats.queue_waits),
        "updated_at": now,
    }
    upsert(conn, t.step_duration_stats, values, ["flow_name", "step"])


def base_step(name: str) -> str:
    """A map instance ("notify[3]") counts toward its map step's statistics."""
    return name.split("[", 1)[0] if name.endswith("]") else name
