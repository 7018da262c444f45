"""Approval steps: a run waits for a person's decision. Not public API.

A ready approval step (kind "approval") moves to ``awaiting_approval`` instead of being
queued: it holds no worker, no attempt and no slot. Its deadline, if it has a ``timeout``,
is kept in ``step_runs.next_attempt_at`` like a retry timer, so the scheduler's timers
see it (``SqlStore.next_retry_at``) and a restart loses none. A decision (``flowkit
approve``/``reject``, or the timeout's ``on_timeout``) moves it to success or failed in one
transaction that records an attempt row (who decided: its worker column; why: its error
for a rejection), a result ``{"approved", "by", "reason", "at"}``, an audit event whose
actor is the decider, and moves the run on (downstream steps become ready, or
upstream_failed; a failed run compensates).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from ..errors import ApprovalError, NotFoundError
from ..spec import FlowSpec
from ..states import AttemptState, RunState, StepState
from . import tables as t
from .machine import BAD, OK, Effects, Gate, task_id_for

if TYPE_CHECKING:
    from .base import Tx
    from .machine import Machine
    from .sql import SqlStore

#: The actor of a decision taken because an approval's timeout passed.
TIMEOUT_ACTOR = "timeout"


def await_decisions(machine: Machine, names: list[str], old: StepState) -> list[str]:
    """Move the approval steps among ``names`` to awaiting_approval; return the others."""
    tx, spec = machine.tx, machine.spec
    rest = []
    for name in names:
        step = spec.step(name)
        if step.kind != "approval":
            rest.append(name)
            continue
        seconds = step.approval_timeout_seconds
        deadline = tx.now + timedelta(seconds=seconds) if seconds else None
        until = (
            f"; after {seconds:g} s it is {'approved' if step.on_timeout == 'approve' else 'rejected'}"
            if seconds
            else ""
        )
        if (
            tx.cas_step(
                machine.run_id,
                name,
                [old],
                StepState.AWAITING_APPROVAL,
                reason=f"waiting for `flowkit approve {machine.run_id} {name} --by NAME` (or reject){until}",
                started_at=tx.now,
                next_attempt_at=deadline,
            )
            and deadline is not None
        ):
            machine.effects.merge(Effects(wake=True, next_timer=deadline))  # the scheduler's timer
    return rest


def decide(
    store: SqlStore, run_id: str, step: str, *, approve: bool, by: str, reason: str = "", now: datetime | None = None
) -> Effects:
    """Approve or reject ``step`` of ``run_id`` for ``by``, or raise a one-line error saying
    why it cannot be decided. Downstream steps that become ready are left as waiters for
    the scheduler to grant (publish an event to wake it)."""
    with store.tx(by, now) as tx:
        run = tx.conn.execute(
            select(t.runs.c.flow_name, t.runs.c.version, t.runs.c.state).where(t.runs.c.id == run_id)
        ).first()
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r}; see `flowkit runs list`")
        spec = tx.flow_spec(run.flow_name, run.version)
        where = f'run {run_id} (flow "{run.flow_name}")'
        approvals = [s.name for s in spec.steps if s.kind == "approval"]
        try:
            kind = spec.step(step).kind
        except KeyError:
            raise NotFoundError(
                f'{where} has no step "{step}"; its approval steps are: {", ".join(approvals) or "none"}',
                flow=run.flow_name,
                step=step,
            ) from None
        if kind != "approval":
            raise ApprovalError(
                f'step "{step}" of {where} is a {kind} step, not an approval; its approval steps are: '
                f"{', '.join(approvals) or 'none'}",
                flow=run.flow_name,
                step=step,
            )
        c = t.step_runs.c
        row = tx.conn.execute(select(c.state, c.started_at).where(c.run_id == run_id, c.step == step)).one()
        if row.state != StepState.AWAITING_APPROVAL.value:
            raise ApprovalError(
                f'step "{step}" of {where} is {row.state}{_decided_by(tx, run_id, step)}, not awaiting '
                f"approval (the run is {run.state})",
                flow=run.flow_name,
                step=step,
            )
        if run.state != RunState.RUNNING.value:
            raise ApprovalError(
                f'{where} is {run.state}; resume it before deciding step "{step}"', flow=run.flow_name, step=step
            )
        effects = decide_in(
            tx,
            spec,
            run_id,
            step,
            approve=approve,
            actor=by,
            reason=reason,
            started_at=row.started_at,
            global_cap=None,
            gate=None,
        )
        if effects is None:  # decided by someone else between the read and the write
            raise ApprovalError(
                f'step "{step}" of {where} was decided meanwhile{_decided_by(tx, run_id, step)}',
                flow=run.flow_name,
                step=step,
            )
    return effects


def decide_in(
    tx: Tx,
    spec: FlowSpec,
    run_id: str,
    step: str,
    *,
    approve: bool,
    actor: str,
    reason: str,
    started_at: datetime | None,
    global_cap: int | None,
    gate: Gate | None,
) -> Effects | None:
    """The decision inside ``tx`` (compare-and-set on awaiting_approval); None if it lost."""
    verb = "approved" if approve else "rejected"
    why = f"{verb} by {actor}{f': {reason}' if reason else ''}"
    new = StepState.SUCCESS if approve else StepState.FAILED
    if not tx.cas_step(
        run_id, step, [StepState.AWAITING_APPROVAL], new, reason=why, ended_at=tx.now, next_attempt_at=None, attempts=1
    ):
        return None
    tx.conn.execute(
        insert(t.attempts).values(
            run_id=run_id,
            step=step,
            number=1,
            task_id=task_id_for(run_id, step, 1),
            state=(AttemptState.SUCCESS if approve else AttemptState.FAILED).value,
            deliveries=0,
            worker=actor,
            dispatched_at=started_at or tx.now,
            started_at=started_at or tx.now,
            ended_at=tx.now,
            error=None if approve else why,
            interruptions=0,
        )
    )
    value = json.dumps({"approved": approve, "by": actor, "reason": reason, "at": tx.now.isoformat()}, sort_keys=True)
    tx.conn.execute(
        insert(t.results).values(run_id=run_id, step=step, value=value, size=len(value.encode()), created_at=tx.now)
    )
    tx.event(
        verb,
        run_id=run_id,
        step=step,
        attempt=1,
        old=StepState.AWAITING_APPROVAL.value,
        new=new.value,
        reason=why,
        actor=actor,
    )
    machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate)
    machine.settle([(step, OK if approve else BAD, None)])
    machine.effects.wake = True  # waiters to grant, or a run that ended
    effects: Effects = machine.effects
    return effects


def _decided_by(tx: Tx, run_id: str, step: str) -> str:
    a = t.attempts.c
    who = tx.conn.execute(select(a.worker, a.state).where(a.run_id == run_id, a.step == step, a.number == 1)).first()
    if who is None or who.worker is None:
        return ""
    return f" ({'approved' if who.state == AttemptState.SUCCESS.value else 'rejected'} by {who.worker})"


def expire_approvals(
    store: SqlStore, now: datetime, *, specs: dict[tuple[str, str], FlowSpec], global_cap: int | None, gate: Gate
) -> Effects:
    """Apply ``on_timeout`` to approvals whose deadline passed (the scheduler's timer), as
    actor "timeout"."""
    effects = Effects()
    c, r = t.step_runs.c, t.runs.c
    with store.tx(TIMEOUT_ACTOR, now) as tx:
        rows = tx.conn.execute(
            select(c.run_id, c.step, c.started_at, r.flow_name, r.version)
            .join(t.runs, r.id == c.run_id)
            .where(
                c.state == StepState.AWAITING_APPROVAL.value,
                c.next_attempt_at <= now,
                r.state == RunState.RUNNING.value,
            )
        ).all()
        for row in rows:
            spec = store._spec_for(tx, specs, row.flow_name, row.version)
            step = spec.step(row.step)
            done = decide_in(
                tx,
                spec,
                row.run_id,
                row.step,
                approve=step.on_timeout == "approve",
                actor=TIMEOUT_ACTOR,
                reason=f"no decision within {step.approval_timeout_seconds:g} s (on_timeout={step.on_timeout!r})",
                started_at=row.started_at,
                global_cap=global_cap,
                gate=gate,
            )
            if done is not None:
                effects.merge(done)
    return effects
