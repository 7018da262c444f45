"""The store side of a flow's ``overlap=`` policy: what its scheduled runs are doing, and
the intervals a ``skip`` dropped.

Not public API. The decision is :func:`flowkit.schedules.planner.overlap_action`; holding a
buffered run is the run-start rule (flowkit/store/run_lanes.py); cancelling the other run
is the operator's cancel path (``OperatorOps.cancel_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..schedules.timetable import Interval
from ..states import RunState
from . import tables as t
from .base import as_utc

if TYPE_CHECKING:
    from .sql import SqlStore


@dataclass
class ScheduledActivity:
    """A flow's scheduled runs (not backfill runs) that have not ended."""

    going: list[str] = field(default_factory=list)  # running or paused, oldest first
    queued: int = 0  # created and held (buffered, or behind max_active_runs)


def scheduled_activity(store: SqlStore, flow: str) -> ScheduledActivity:
    r = t.runs.c
    out = ScheduledActivity()
    live = (RunState.QUEUED.value, RunState.RUNNING.value, RunState.PAUSED.value)
    with store._conn() as conn:
        rows = conn.execute(
            select(r.id, r.state)
            .where(r.flow_name == flow, r.trigger == "schedule", r.backfill_id.is_(None), r.state.in_(live))
            .order_by(r.created_at, r.id)
        ).all()
    for row in rows:
        if row.state == RunState.QUEUED.value:
            out.queued += 1
        else:
            out.going.append(row.id)
    return out


def last_planned(store: SqlStore, flow: str) -> datetime | None:
    """The newest logical date the schedule dealt with: a run's, or a skipped interval's."""
    with store._conn() as conn:
        run = conn.execute(select(func.max(t.runs.c.logical_date)).where(t.runs.c.flow_name == flow)).scalar()
        skip = conn.execute(
            select(func.max(t.schedule_skips.c.logical_date)).where(t.schedule_skips.c.flow_name == flow)
        ).scalar()
    dates = [as_utc(d) for d in (run, skip) if d is not None]
    return max(d for d in dates if d is not None) if dates else None


def record_skip(store: SqlStore, actor: str, flow: str, interval: Interval, reason: str) -> bool:
    """Record the skip and its audit event (``schedule_skipped``, the interval named); False
    if another scheduler recorded it first."""
    try:
        with store.tx(actor) as tx:
            tx.conn.execute(
                t.schedule_skips.insert().values(flow_name=flow, logical_date=interval.end, at=tx.now, reason=reason)
            )
            tx.event(
                "schedule_skipped",
                flow=flow,
                reason=f"interval {interval.start.isoformat()} .. {interval.end.isoformat()} skipped: {reason}",
            )
    except IntegrityError:
        return False
    return True
