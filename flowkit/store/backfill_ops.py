"""Backfills in the store: create, read, pause, unpause, cancel, and the scheduler's advance.

Not public API. The invariant: a backfill has at most ``max_active_runs`` runs queued or
running at once, so its rows grow with its progress, never up front. ``advance_backfills``
(called by the scheduler's sweep and when a run ends) creates the next runs up to that cap
and moves the cursor; it looks at no more than :data:`SCAN_PER_PASS` intervals of a backfill
per call, so a range of intervals that all keep their runs never stalls a sweep.

A re-run (``--reprocess failed|all``) goes through the operator's retry path
(``OperatorOps.retry_run``) on the interval's existing run, after moving that run into the
backfill's lane: one run per (flow, interval) stays the unique constraint's rule, and the
earlier attempts stay in the run's history (attempt numbers continue).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from ..backfill.plan import (
    Action,
    BackfillError,
    Decision,
    check_range,
    count_intervals,
    decide,
    estimate_finish,
    intervals,
    parse_when,
    timetable_of,
)
from ..errors import ActionRefused, NotFoundError
from ..schedules.timetable import Interval
from ..spec import FlowSpec, resolve_params
from ..states import RunState
from . import tables as t
from .base import as_utc, row_dict, utcnow

if TYPE_CHECKING:
    from .sql import SqlStore

log = logging.getLogger(__name__)

#: Intervals one advance looks at per backfill at most (created, re-run or left alone).
SCAN_PER_PASS = 200
ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value)
_B = t.backfills.c
_R = t.runs.c


@dataclass
class Advance:
    """What one advance did: runs to start, runs reopened, backfills that ended."""

    created: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    done: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedInterval:
    interval: Interval
    decision: Decision
    run_id: str | None = None


# -- create -------------------------------------------------------------------------------
def plan_backfill(
    store: SqlStore,
    flow: str,
    start: str,
    end: str,
    *,
    reprocess: str = "none",
    backwards: bool = False,
    now: datetime | None = None,
) -> tuple[FlowSpec, datetime, datetime, int]:
    """The flow's spec, the range in UTC and its interval count; a one-line BackfillError
    for an unscheduled flow, a bad date, an empty or reversed range."""
    spec = store.flow_spec(flow)  # NotFoundError names the known flows
    timetable = timetable_of(spec)
    lo = parse_when(start, timetable.zone, "--start")
    hi = parse_when(end, timetable.zone, "--end")
    check_range(flow, lo, hi, now or utcnow())
    if reprocess not in ("none", "failed", "all"):
        raise BackfillError(f"--reprocess {reprocess!r} is not one of none, failed, all")
    return spec, lo, hi, count_intervals(flow, timetable, lo, hi)


def dry_run(
    store: SqlStore, spec: FlowSpec, lo: datetime, hi: datetime, *, reprocess: str, backwards: bool
) -> list[PlannedInterval]:
    """Every interval of the range, in the order the backfill takes them, and what it would do."""
    with store._conn() as conn:
        existing = {
            as_utc(r.logical_date): r
            for r in conn.execute(
                select(_R.id, _R.state, _R.logical_date).where(
                    _R.flow_name == spec.name, _R.logical_date >= lo, _R.logical_date <= hi
                )
            )
        }
    out = []
    for interval in intervals(timetable_of(spec), lo, hi, backwards=backwards):
        run = existing.get(interval.end)
        out.append(PlannedInterval(interval, decide(reprocess, run.state if run else None), run.id if run else None))
    return out


def create_backfill(
    store: SqlStore,
    flow: str,
    start: str,
    end: str,
    *,
    reprocess: str = "none",
    max_active_runs: int = 4,
    backwards: bool = False,
    params: dict[str, Any] | None = None,
    by: str,
    reason: str = "",
    now: datetime | None = None,
) -> int:
    """Record a running backfill (no run yet: the scheduler creates them); returns its id."""
    if max_active_runs < 1:
        raise BackfillError(f"--max-active-runs must be at least 1, not {max_active_runs}")
    now = now or utcnow()
    spec, lo, hi, total = plan_backfill(store, flow, start, end, reprocess=reprocess, backwards=backwards, now=now)
    resolved = resolve_params(spec, params or {})
    with store.tx(by, now) as tx:
        backfill_id = int(
            tx.conn.execute(
                insert(t.backfills)
                .values(
                    flow_name=flow,
                    range_start=lo,
                    range_end=hi,
                    reprocess=reprocess,
                    max_active_runs=max_active_runs,
                    backwards=backwards,
                    params=json.dumps(resolved, sort_keys=True),
                    state="running",
                    total=total,
                    handed=0,
                    cursor=None,
                    created_at=now,
                    updated_at=now,
                    actor=by,
                    reason=reason,
                )
                .returning(_B.id)
            ).scalar_one()
        )
        tx.event(
            "backfill_created",
            flow=flow,
            new="running",
            reason=f"backfill {backfill_id}: {total} interval(s) {lo.isoformat()} .. {hi.isoformat()}, "
            f"--reprocess {reprocess}, --max-active-runs {max_active_runs}"
            + (", backwards" if backwards else "")
            + (f" ({reason})" if reason else ""),
        )
    return backfill_id


# -- read ---------------------------------------------------------------------------------
def get_backfill(store: SqlStore, backfill_id: int) -> dict[str, Any]:
    with store._conn() as conn:
        row = conn.execute(select(t.backfills).where(_B.id == backfill_id)).first()
    if row is None:
        raise NotFoundError(f"no backfill with id {backfill_id}; see `flowkit backfill list`")
    out = row_dict(row)
    out["params"] = json.loads(out["params"])
    return out


def list_backfills(store: SqlStore, *, flow: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    q = select(t.backfills).order_by(_B.id.desc()).limit(limit)
    if flow:
        q = q.where(_B.flow_name == flow)
    with store._conn() as conn:
        return [row_dict(r) for r in conn.execute(q)]


def progress(store: SqlStore, backfill_id: int, now: datetime | None = None) -> dict[str, Any]:
    """done / running / failed / kept (intervals whose existing run was left alone) / left,
    and the estimated finish at the rate its runs have ended so far."""
    backfill = get_backfill(store, backfill_id)
    with store._conn() as conn:
        by_state = {
            r.state: int(r.n)
            for r in conn.execute(
                select(_R.state, func.count().label("n")).where(_R.backfill_id == backfill_id).group_by(_R.state)
            )
        }
        times = conn.execute(
            select(func.min(_R.started_at), func.max(_R.ended_at)).where(_R.backfill_id == backfill_id)
        ).one()
    done = by_state.get(RunState.SUCCESS.value, 0)
    failed = by_state.get(RunState.FAILED.value, 0) + by_state.get(RunState.CANCELLED.value, 0)
    running = sum(n for s, n in by_state.items() if s in (*ACTIVE, RunState.PAUSED.value))
    left = backfill["total"] - backfill["handed"]
    kept = backfill["handed"] - sum(by_state.values())
    finish = None
    if backfill["state"] in ("running", "paused"):
        finish = estimate_finish(
            now or utcnow(),
            finished=done + failed,
            remaining=left + running,
            first_started=as_utc(times[0]),
            last_ended=as_utc(times[1]),
        )
    return {
        "backfill": backfill,
        "done": done,
        "running": running,
        "failed": failed,
        "kept": kept,
        "left": left,
        "estimated_finish": finish,
    }


# -- operator actions ---------------------------------------------------------------------
def _set_state(store: SqlStore, backfill_id: int, old: tuple[str, ...], new: str, *, by: str, reason: str) -> str:
    backfill = get_backfill(store, backfill_id)
    if backfill["state"] not in old:
        raise ActionRefused(
            f"backfill {backfill_id} is {backfill['state']}; only a {' or '.join(old)} one can be {new}"
        )
    with store.tx(by) as tx:
        values: dict[str, Any] = {"state": new, "updated_at": tx.now}
        if new == "cancelled":
            values["ended_at"] = tx.now
        moved = tx.conn.execute(
            update(t.backfills).where(_B.id == backfill_id, _B.state.in_(old)).values(**values)
        ).rowcount
        if moved != 1:
            raise ActionRefused(
                f"backfill {backfill_id} changed state meanwhile; see `flowkit backfill show {backfill_id}`"
            )
        tx.event(
            f"backfill_{new}",
            flow=backfill["flow_name"],
            old=backfill["state"],
            new=new,
            reason=f"backfill {backfill_id}: {new} by {by}" + (f": {reason}" if reason else ""),
        )
    return str(backfill["flow_name"])


def pause_backfill(store: SqlStore, backfill_id: int, *, by: str, reason: str = "") -> str:
    """No run more is created or started; its running runs go on."""
    _set_state(store, backfill_id, ("running",), "paused", by=by, reason=reason)
    return f"backfill {backfill_id}: paused (its running runs go on; its queued runs wait)"


def unpause_backfill(store: SqlStore, backfill_id: int, *, by: str, reason: str = "") -> str:
    _set_state(store, backfill_id, ("paused",), "running", by=by, reason=reason)
    return f"backfill {backfill_id}: running again"


def cancel_backfill(store: SqlStore, backfill_id: int, *, by: str, reason: str = "") -> tuple[str, list[Any]]:
    """Create nothing more; cancel its runs that have not started; let its running runs
    finish (work half done is worth finishing; `flowkit runs cancel` stops one). Returns the
    summary and the cancels' results (to revoke and wake, as the CLI does for a run)."""
    _set_state(store, backfill_id, ("running", "paused"), "cancelled", by=by, reason=reason)
    with store._conn() as conn:
        queued = [
            r.id
            for r in conn.execute(select(_R.id).where(_R.backfill_id == backfill_id, _R.state == RunState.QUEUED.value))
        ]
    results = []
    for run_id in queued:
        try:
            results.append(store.cancel_run(run_id, by=by, reason=f"backfill {backfill_id} cancelled"))
        except ActionRefused:  # it started (or ended) meanwhile: it runs to its end
            continue
    with store._conn() as conn:
        running = int(
            conn.execute(
                select(func.count()).where(_R.backfill_id == backfill_id, _R.state == RunState.RUNNING.value)
            ).scalar()
            or 0
        )
    return (
        f"backfill {backfill_id}: cancelled; {len(results)} queued run(s) cancelled, "
        f"{running} running run(s) left to finish",
        results,
    )


# -- the scheduler's advance --------------------------------------------------------------
def advance_backfills(store: SqlStore, actor: str, now: datetime) -> Advance:
    """Create the next runs of every running backfill within its cap; end those whose
    intervals are all handed out and whose runs have all ended (``backfill_done``)."""
    out = Advance()
    paused = select(t.flows.c.name).where(t.flows.c.paused.is_(True))
    with store._conn() as conn:
        rows = conn.execute(
            select(t.backfills).where(_B.state == "running", _B.flow_name.not_in(paused)).order_by(_B.id)
        ).all()
    for row in rows:
        try:
            _advance_one(store, actor, now, row_dict(row), out)
        except (BackfillError, NotFoundError) as exc:  # its flow went away: say so, the rest go on
            log.error("backfill %s: cannot advance: %s", row.id, exc)
    return out


def _active(store: SqlStore, backfill_id: int) -> int:
    with store._conn() as conn:
        return int(
            conn.execute(select(func.count()).where(_R.backfill_id == backfill_id, _R.state.in_(ACTIVE))).scalar() or 0
        )


def _advance_one(store: SqlStore, actor: str, now: datetime, bf: dict[str, Any], out: Advance) -> None:
    active = _active(store, bf["id"])
    if bf["handed"] >= bf["total"]:
        if active == 0:
            _finish(store, actor, now, bf)
            out.done.append(bf["id"])
        return
    room = bf["max_active_runs"] - active
    if room <= 0:
        return
    spec = store.flow_spec(bf["flow_name"])
    handed, cursor = 0, bf["cursor"]
    todo = intervals(timetable_of(spec), bf["range_start"], bf["range_end"], backwards=bf["backwards"], after=cursor)
    for interval in todo:
        if room <= 0 or handed >= SCAN_PER_PASS:
            break
        if _take(store, actor, spec, bf, interval, out):
            room -= 1
        handed += 1
        cursor = interval.end
    # Only from the cursor it read: a second scheduler that advanced the same intervals
    # meanwhile (a lease handover) has counted them; its runs are this backfill's either way.
    same_cursor = _B.cursor.is_(None) if bf["cursor"] is None else _B.cursor == bf["cursor"]
    with store._conn() as conn:
        conn.execute(
            update(t.backfills)
            .where(_B.id == bf["id"], _B.state == "running", same_cursor)
            .values(handed=_B.handed + handed, cursor=cursor, updated_at=now)
        )


def _take(store: SqlStore, actor: str, spec: FlowSpec, bf: dict[str, Any], interval: Interval, out: Advance) -> bool:
    """Deal with one interval; True if it took a place in the backfill's lane."""
    with store._conn() as conn:
        run = conn.execute(
            select(_R.id, _R.state, _R.backfill_id).where(_R.flow_name == spec.name, _R.logical_date == interval.end)
        ).first()
    decision = decide(bf["reprocess"], run.state if run else None, own=bool(run and run.backfill_id == bf["id"]))
    why = f"backfill {bf['id']}: interval {interval.start.isoformat()} .. {interval.end.isoformat()}"
    if decision.action is Action.CREATE:
        run_id = store.create_run(
            spec,
            bf["params"] if isinstance(bf["params"], dict) else json.loads(bf["params"]),
            actor=actor,
            trigger="backfill",
            reason=why,
            logical_date=interval.end,
            backfill_id=bf["id"],
        )
        if run_id is None:  # the schedule created it a moment ago: it keeps that run
            return False
        out.created.append(run_id)
        return True
    if decision.action is Action.RERUN and run is not None:
        return _rerun(store, actor, spec, bf, run.id, why, out)
    log.info("%s: %s", why, decision.why)
    return False


def _rerun(
    store: SqlStore, actor: str, spec: FlowSpec, bf: dict[str, Any], run_id: str, why: str, out: Advance
) -> bool:
    with store._conn() as conn:  # into the backfill's lane: its cap counts the reopened run
        before = conn.execute(select(_R.backfill_id).where(_R.id == run_id)).scalar()
        conn.execute(update(t.runs).where(_R.id == run_id).values(backfill_id=bf["id"]))
    steps = spec.step_names if bf["reprocess"] == "all" else ()
    try:
        store.retry_run(run_id, steps=steps, by=actor, reason=f"{why} (--reprocess {bf['reprocess']})")
    except ActionRefused as exc:  # it changed meanwhile: it keeps what it has, in its own lane
        with store._conn() as conn:
            conn.execute(update(t.runs).where(_R.id == run_id).values(backfill_id=before))
        log.warning("%s: not run again: %s", why, exc)
        return False
    out.rerun.append(run_id)
    return True


def _finish(store: SqlStore, actor: str, now: datetime, bf: dict[str, Any]) -> None:
    counts = progress(store, bf["id"], now)
    with store.tx(actor, now) as tx:
        moved = tx.conn.execute(
            update(t.backfills)
            .where(_B.id == bf["id"], _B.state == "running")
            .values(state="done", ended_at=now, updated_at=now)
        ).rowcount
        if moved == 1:
            tx.event(
                "backfill_done",
                flow=bf["flow_name"],
                old="running",
                new="done",
                reason=f"backfill {bf['id']}: {bf['total']} interval(s): {counts['done']} succeeded, "
                f"{counts['failed']} failed or cancelled, {counts['kept']} kept their existing run",
            )
