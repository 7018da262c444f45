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

The compensation of a map step undoes each instance that succeeded (the map step may have
failed because another instance did), as instances ``step[i]:compensate`` run one at a
time from the highest index down (:func:`expand_ready`); the compensations of the steps
before the map step wait for all of them.

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

from sqlalchemy import delete, insert, or_, select, update

from ..errors import ActionRefused
from ..spec import COMPENSATION_SUFFIX, FlowSpec, compensation_name, split_instance
from ..states import StepState
from . import map_ops
from . import tables as t
from .machine_types import SKIP

if TYPE_CHECKING:
    from .base import Tx
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
        succeeded = _succeeded(machine)
        if not succeeded:
            return reason, None
        _start(machine, [s.compensate for s in spec.steps if s.name in succeeded and s.compensate], reason)
        return None
    if outcome != COMPENSATING:
        return reason, outcome  # decided before (a second finish of the same run)
    names, rows = _compensation_states(machine)
    broken = [n for n in names if rows.get(n) == StepState.FAILED.value]
    done = [n for n in names if rows.get(n) == StepState.SUCCESS.value]
    kept = [n for n in names if rows.get(n) == StepState.SKIPPED.value]  # an operator's mark
    undone = f"compensated: {', '.join(done)}"
    notes = f"; not undone (marked skipped): {', '.join(kept)}" if kept else ""
    if broken:
        also = f" ({undone})" if done else ""
        return f"{reason}; compensation failed: {', '.join(broken)}{also}{notes}", COMPENSATION_FAILED
    return f"{reason}; {undone if done else 'nothing undone'}{notes}", COMPENSATED


def _succeeded(machine: Machine) -> set[str]:
    """The steps with ``compensate=`` that have something to undo: those that succeeded, and
    map steps with an instance that succeeded (a map step fails when one instance fails, but
    the others' effects stand); a map step none of whose instances succeeded has none."""
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    c = t.step_runs.c
    compensated = [s.name for s in spec.steps if s.compensate and s.kind != "map"]
    maps = [s.name for s in spec.steps if s.compensate and s.kind == "map"]
    found = {
        r[0]
        for r in tx.conn.execute(
            select(c.step).where(c.run_id == run_id, c.step.in_(compensated), c.state == StepState.SUCCESS.value)
        )
    }
    if maps:
        found |= {
            r[0]
            for r in tx.conn.execute(
                select(c.map_parent)
                .distinct()
                .where(c.run_id == run_id, c.map_parent.in_(maps), c.state == StepState.SUCCESS.value)
            )
        }
    return found


def _compensation_states(machine: Machine) -> tuple[list[str], dict[str, str]]:
    """The run's compensation steps in order, and their states: the instances of a map
    step's compensation in its place, in the order they ran, so a reason names each."""
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    c = t.step_runs.c
    plain = [comp.name for comp in spec.compensations]
    rows = tx.conn.execute(
        select(c.step, c.state, c.map_parent)
        .where(c.run_id == run_id, or_(c.step.in_(plain), c.map_parent.in_(plain)))
        .order_by(c.map_index)
    ).all()
    members: dict[str, list[str]] = {}
    for row in rows:
        if row.map_parent is not None:
            members.setdefault(row.map_parent, []).append(row.step)
    names = [m for name in plain for m in members.get(name, [name])]
    return names, {row.step: row.state for row in rows}


def undoes_a_map(spec: FlowSpec, name: str) -> bool:
    """Is ``name`` the compensation of a map step (which expands, one per instance)?"""
    step = spec.step(name)
    return (
        step.kind == "compensation"
        and step.compensates is not None
        and split_instance(name)[1] is None
        and spec.step(step.compensates).kind == "map"
    )


def expand_ready(machine: Machine, names: list[str], old: StepState) -> list[str]:
    """Expand the compensations of map steps among ``names`` (ready to start, in state
    ``old``); return the other names, which start as usual."""
    maps = [n for n in names if undoes_a_map(machine.spec, n)]
    for name in maps:
        _expand(machine, name, old)
    return [n for n in names if n not in maps] if maps else names


def _expand(machine: Machine, name: str, old: StepState) -> None:
    """The compensation of a map step undoes each of its instances that succeeded, each as
    an instance ``step[i]:compensate`` of its own (attempts, retries, slots), one at a time
    from the highest index down: the reverse of the order they were started in. It runs
    like a map step (map_ops): each instance that ends starts the next (``map_next`` over
    ``map_index``, the order here) and the last one ends it, failed if any instance failed."""
    tx, run_id = machine.tx, machine.run_id
    mapped = machine.spec.step(name).compensates or ""
    c = t.step_runs.c
    done = tx.conn.execute(
        select(c.step, c.map_item)
        .where(c.run_id == run_id, c.map_parent == mapped, c.state == StepState.SUCCESS.value)
        .order_by(c.map_index.desc())
    ).all()
    if not done:
        if tx.cas_step(
            run_id,
            name,
            [old],
            StepState.SKIPPED,
            ended_at=tx.now,
            reason=f"no instance of {mapped} succeeded: nothing to undo",
        ):
            machine.settle([(name, SKIP, None)])
        return
    members = [compensation_name(r.step) for r in done]
    if not tx.cas_step(
        run_id,
        name,
        [old],
        StepState.RUNNING,
        started_at=tx.now,
        reason=f"undoing the {len(done)} instance(s) of {mapped} that succeeded, last first: {', '.join(members)}",
        map_total=len(done),
        map_left=len(done),
        map_failed=0,
        map_next=1,
    ):
        return
    made = map_ops.attempts_made(tx, run_id, members)
    priority = machine.spec.step(name).priority or 0
    # n_up=1 with nothing counted: held, like a map step's instances, until map_ops starts it
    tx.conn.execute(
        insert(t.step_runs),
        [
            {
                "run_id": run_id,
                "step": member,
                "state": StepState.PENDING.value,
                "attempts": made.get(member, 0),
                "retry_base": made.get(member, 0),
                "updated_at": tx.now,
                "n_up": 1,
                "ok_up": 0,
                "bad_up": 0,
                "skip_up": 0,
                "priority": priority,
                "map_parent": name,
                "map_index": k,
                "map_item": row.map_item,
            }
            for k, (member, row) in enumerate(zip(members, done, strict=True))
        ],
    )
    machine.start([members[0]], StepState.PENDING)


def _start(machine: Machine, names: list[str], reason: str) -> None:
    tx, spec, run_id = machine.tx, machine.spec, machine.run_id
    chosen = set(names)
    rows: list[dict[str, Any]] = []
    ready: list[str] = []
    made = map_ops.attempts_made(tx, run_id, names)
    for name in names:
        comp = spec.step(name)
        rows.append(
            {
                "run_id": run_id,
                "step": name,
                "state": StepState.PENDING.value,
                "attempts": made.get(name, 0),
                "retry_base": made.get(name, 0),
                "updated_at": tx.now,
                "n_up": sum(u in chosen for u in comp.upstream),
                "ok_up": 0,
                "bad_up": 0,
                "skip_up": 0,
                "priority": comp.priority or 0,
            }
        )
        if rows[-1]["n_up"] == 0:
            ready.append(name)
    tx.conn.execute(insert(t.step_runs), rows)
    r = t.runs.c
    tx.conn.execute(
        update(t.runs).where(r.id == run_id).values(steps_left=r.steps_left + len(rows), outcome=COMPENSATING)
    )
    order = sorted(names, key=spec.position.__getitem__)
    tx.event(
        "compensation_started",
        run_id=run_id,
        new=COMPENSATING,
        reason=f"{reason}; undoing the steps that succeeded, last first: {', '.join(order)}",
    )
    machine.start(sorted(ready, key=spec.position.__getitem__), StepState.PENDING)


def reopen(tx: Tx, spec: FlowSpec, run_id: str, *, decided: Iterable[str], why: str, hint: str = "") -> set[str]:
    """An operator reopens ``run_id``: return the steps its compensations undid, which must
    run again (before their downstream steps), and take the compensation rows out of the run.

    A step whose compensation failed, or was cancelled after it started, may be half undone:
    refused unless it is among ``decided`` (the steps the operator named: to run again, or
    to mark). ``hint`` is the retry the refusal suggests (its ``--step`` options)."""
    c = t.step_runs.c
    names = [comp.name for comp in spec.compensations]
    rows = (
        {
            r.step: r
            for r in tx.conn.execute(
                select(c.step, c.state, c.attempts, c.map_total).where(c.run_id == run_id, c.step.in_(names))
            )
        }
        if names
        else {}
    )
    if not rows:
        return set()
    undone = {spec.step(n).compensates or n for n, r in rows.items() if r.state == StepState.SUCCESS.value}
    # a map step's compensation has no attempts of its own: it started if it expanded
    unsure = [
        spec.step(n).compensates or n
        for n, r in rows.items()
        if r.state == StepState.FAILED.value
        or (r.state == StepState.CANCELLED.value and (r.attempts > 0 or r.map_total is not None))
    ]
    unsure = sorted(set(unsure) - set(decided), key=spec.position.__getitem__)
    if unsure:
        first = unsure[0]
        raise ActionRefused(
            f"run {run_id}: the compensation of {', '.join(unsure)} did not complete, so its effect "
            f"may be half undone; check it, then `flowkit runs retry {run_id} --step {first}{hint}` "
            f"runs it again, or `flowkit runs mark {run_id} {first}{COMPENSATION_SUFFIX} skipped` "
            "keeps it as it stands"
        )
    _take_out(tx, run_id, {n: r.state for n, r in rows.items()}, why)
    return undone - set(decided)


def _take_out(tx: Tx, run_id: str, rows: dict[str, str], why: str) -> None:
    """Delete a reopened run's compensation rows (and their map instances' rows) and their
    results; their attempts and events stay as the history of the earlier compensation."""
    c, r = t.step_runs.c, t.results.c
    members = [m for (m,) in tx.conn.execute(select(c.step).where(c.run_id == run_id, c.map_parent.in_(list(rows))))]
    for name, state in rows.items():
        if tx.conn.execute(delete(t.step_runs).where(c.run_id == run_id, c.step == name, c.state == state)).rowcount:
            tx.event(
                "compensation_reset",
                run_id=run_id,
                step=name,
                old=state,
                new="reset",
                reason=f"{why}: the run is reopened; a later failure compensates again",
            )
    if members:
        tx.conn.execute(delete(t.step_runs).where(c.run_id == run_id, c.step.in_(members)))
    tx.conn.execute(delete(t.results).where(r.run_id == run_id, or_(r.step.in_(list(rows)), r.step.in_(members))))
