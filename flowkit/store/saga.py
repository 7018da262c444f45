"""Compensation (saga): undo the steps that succeeded when their run fails. Not public API.

A step declared with ``compensate=fn`` has a compensation step ``<step>:compensate`` in
``FlowSpec.compensations`` (kind "compensation", trigger all_done, upstream = the
compensations of every step downstream of it). A new run has no rows for them. When the
run's last step ends and some step failed, :func:`compensate_or_conclude` (called by
``Machine.finish_run``) gives the run rows for the compensations of the steps that
SUCCEEDED only, counting as upstreams only the rows it creates, so a compensation waits for
those of its succeeded descendants and no other; it raises ``steps_left`` by their number
and starts those with nothing to wait for. Each then runs as an ordinary step (attempts,
retries, timeout, ledger holds, workers). When they are all done the run is decided again:
``failed``, with ``runs.outcome`` "compensated" or "compensation failed".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from ..states import StepState
from . import tables as t

if TYPE_CHECKING:
    from .machine import Machine

#: runs.outcome while the compensations run, and once they are done.
COMPENSATING = "compensating"
COMPENSATED = "compensated"
COMPENSATION_FAILED = "compensation failed"


def compensate_or_conclude(machine: Machine, failed: list[str]) -> tuple[str, str | None] | None:
    """The run's steps are all done and ``failed`` failed: start the compensations of the
    succeeded steps (returns None: the run goes on), or, once they ran or when there is
    nothing to undo, return the run's audit reason and its outcome (None: nothing to undo)."""
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    outcome = tx.conn.execute(select(t.runs.c.outcome).where(t.runs.c.id == run_id)).scalar()
    own_failures = [f for f in failed if f not in {c.name for c in spec.compensations}]
    reason = f"failed steps: {', '.join(own_failures or failed)}"
    if outcome is None:
        c = t.step_runs.c
        compensated = [s.name for s in spec.steps if s.compensate]
        succeeded = {r[0] for r in tx.conn.execute(select(c.step).where(
            c.run_id == run_id, c.step.in_(compensated), c.state == StepState.SUCCESS.value))}
        if not succeeded:
            return reason, None
        _start(machine, [s.compensate for s in spec.steps if s.name in succeeded and s.compensate],
               reason)
        return None
    if outcome != COMPENSATING:
        return reason, outcome  # decided before (a second finish of the same run)
    c = t.step_runs.c
    names = [comp.name for comp in spec.compensations]
    rows = {r.step: r.state for r in tx.conn.execute(select(c.step, c.state).where(
        c.run_id == run_id, c.step.in_(names)))}
    broken = [n for n in names if rows.get(n) == StepState.FAILED.value]
    done = [n for n in names if n in rows and n not in broken]
    undone = f"compensated: {', '.join(done)}"
    if broken:
        also = f" ({undone})" if done else ""
        return f"{reason}; compensation failed: {', '.join(broken)}{also}", COMPENSATION_FAILED
    return f"{reason}; {undone}", COMPENSATED


def _start(machine: Machine, names: list[str], reason: str) -> None:
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    chosen = set(names)
    rows: list[dict[str, Any]] = []
    ready: list[str] = []
    for name in names:
        comp = spec.step(name)
        rows.append({"run_id": run_id, "step": name, "state": StepState.PENDING.value, "attempts": 0,
                     "updated_at": tx.now, "n_up": sum(u in chosen for u in comp.upstream),
                     "ok_up": 0, "bad_up": 0, "skip_up": 0, "priority": comp.priority or 0})
        if rows[-1]["n_up"] == 0:
            ready.append(name)
    tx.conn.execute(insert(t.step_runs), rows)
    r = t.runs.c
    tx.conn.execute(update(t.runs).where(r.id == run_id).values(
        steps_left=r.steps_left + len(rows), outcome=COMPENSATING))
    order = sorted(names, key=spec.position.__getitem__)
    tx.event("compensation_started", run_id=run_id, new=COMPENSATING,
             reason=f"{reason}; undoing the steps that succeeded, last first: {', '.join(order)}")
    machine.start(sorted(ready, key=spec.position.__getitem__), StepState.PENDING)
