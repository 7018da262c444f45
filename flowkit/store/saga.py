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

An operator who reopens a compensated run (``runs retry``, or ``runs mark`` of one of its
own steps) gets the undone work done again (:func:`reopen`): a step whose compensation
succeeded lost its effect, so it runs again, before its downstream steps as the readiness
counters order it; a step whose compensation failed (or was cancelled while it ran) may
be half undone, and the action is refused unless the operator names it, until someone
looked. The compensation rows leave the run (their attempts and events stay, the history),
``runs.outcome`` is cleared, and a later failure compensates again, attempt numbers going on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, or_, select, update

from ..errors import ActionRefused
from ..spec import COMPENSATION_SUFFIX, FlowSpec
from ..states import StepState
from . import tables as t

if TYPE_CHECKING:
    from .machine import Machine
    from .sql import Tx

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
    done = [n for n in names if rows.get(n) == StepState.SUCCESS.value]
    kept = [n for n in names if rows.get(n) == StepState.SKIPPED.value]  # an operator's mark
    undone = f"compensated: {', '.join(done)}"
    notes = (f"; not undone (marked skipped): {', '.join(kept)}" if kept else "")
    if broken:
        also = f" ({undone})" if done else ""
        return f"{reason}; compensation failed: {', '.join(broken)}{also}{notes}", COMPENSATION_FAILED
    return f"{reason}; {undone if done else 'nothing undone'}{notes}", COMPENSATED


def _start(machine: Machine, names: list[str], reason: str) -> None:
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    chosen = set(names)
    rows: list[dict[str, Any]] = []
    ready: list[str] = []
    made = attempts_made(tx, run_id, names)
    for name in names:
        comp = spec.step(name)
        rows.append({"run_id": run_id, "step": name, "state": StepState.PENDING.value,
                     "attempts": made.get(name, 0), "retry_base": made.get(name, 0),
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


def attempts_made(tx: Tx, run_id: str, names: Iterable[str]) -> dict[str, int]:
    """Attempts made so far by each of ``names`` (compensations of a run compensated before
    an operator reopened it): a new row goes on from there, so task ids never collide."""
    a = t.attempts.c
    return {r.step: int(r.n) for r in tx.conn.execute(
        select(a.step, func.max(a.number).label("n")).where(
            a.run_id == run_id, a.step.in_(list(names))).group_by(a.step))}


def reopen(tx: Tx, spec: FlowSpec, run_id: str, *, decided: Iterable[str], why: str,
           hint: str = "") -> set[str]:
    """An operator reopens ``run_id``: return the steps its compensations undid, which must
    run again (before their downstream steps), and take the compensation rows out of the run.

    A step whose compensation failed, or was cancelled after it started, may be half undone:
    refused unless it is among ``decided`` (the steps the operator named: to run again, or
    to mark). ``hint`` is the retry the refusal suggests (its ``--step`` options)."""
    c = t.step_runs.c
    names = [comp.name for comp in spec.compensations]
    rows = {r.step: r for r in tx.conn.execute(select(c.step, c.state, c.attempts).where(
        c.run_id == run_id, c.step.in_(names)))} if names else {}
    if not rows:
        return set()
    undone = {spec.step(n).compensates or n for n, r in rows.items() if r.state == StepState.SUCCESS.value}
    unsure = [spec.step(n).compensates or n for n, r in rows.items()
              if r.state == StepState.FAILED.value
              or (r.state == StepState.CANCELLED.value and r.attempts > 0)]
    unsure = sorted(set(unsure) - set(decided), key=spec.position.__getitem__)
    if unsure:
        first = unsure[0]
        raise ActionRefused(
            f"run {run_id}: the compensation of {', '.join(unsure)} did not complete, so its effect "
            f"may be half undone; check it, then `flowkit runs retry {run_id} --step {first}{hint}` "
            f"runs it again, or `flowkit runs mark {run_id} {first}{COMPENSATION_SUFFIX} skipped` "
            "keeps it as it stands")
    _take_out(tx, run_id, {n: r.state for n, r in rows.items()}, why)
    return undone - set(decided)


def _take_out(tx: Tx, run_id: str, rows: dict[str, str], why: str) -> None:
    """Delete a reopened run's compensation rows (and their map instances' rows) and their
    results; their attempts and events stay as the history of the earlier compensation."""
    c, r = t.step_runs.c, t.results.c
    members = [m for (m,) in tx.conn.execute(select(c.step).where(
        c.run_id == run_id, c.map_parent.in_(list(rows))))]
    for name, state in rows.items():
        if tx.conn.execute(delete(t.step_runs).where(c.run_id == run_id, c.step == name,
                                                     c.state == state)).rowcount:
            tx.event("compensation_reset", run_id=run_id, step=name, old=state, new="reset",
                     reason=f"{why}: the run is reopened; a later failure compensates again")
    if members:
        tx.conn.execute(delete(t.step_runs).where(c.run_id == run_id, c.step.in_(members)))
    tx.conn.execute(delete(t.results).where(r.run_id == run_id, or_(
        r.step.in_(list(rows)), r.step.in_(members))))
