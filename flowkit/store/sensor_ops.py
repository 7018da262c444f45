"""Sensors in the store: what the end of a poke does to its step. Not public API.

A poke is an attempt like any other (claimed, run on a worker, ended with its holds given
back). What it answered is recorded on the step row (``sensor_*`` columns), and a poke that
said "not yet" parks the step on the retry timer (running -> up_for_retry with
``next_attempt_at``): the scheduler's timer queues the next poke exactly as it queues a
retry, so between pokes the sensor holds no worker and no slot. The schedule and the
timeout are :mod:`flowkit.sensors.policy`'s; this module applies them inside the
transaction that ends the poke, through the one machine (:mod:`.machine`), on every backend:
PostgreSQL's one-statement finish takes no sensor (``worker_ops``).

Pokes are not retries: the retry budget counts the pokes that failed (raised an error), not
the attempts (:func:`failed_tries`). An operator's retry of a sensor starts a new wait: the
timeout counts from the first poke after it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from ..sensors.pokes import PokeOutcome, upstream_flow_outcome
from ..sensors.policy import PokeAgain, next_poke, policy_of
from ..spec import StepSpec
from ..states import AttemptState, RunState, StepState
from . import tables as t
from .base import as_utc
from .machine_types import BAD, SKIP

if TYPE_CHECKING:
    from .machine import Machine
    from .sql import SqlStore

#: A poke's "not yet" message is kept up to this many characters (it is shown, not parsed).
MAX_SAID_CHARS = 500


def poke_ended(machine: Machine, step: StepSpec, number: int, state: AttemptState, error: str | None) -> bool:
    """Record poke ``number`` of sensor ``step`` (its attempt is ended in this transaction) and,
    if it said "not yet", park the step until its next poke or end it on timeout. Returns
    True when that was done here; False leaves the outcome (success, error, skip) to the
    machine, as for any step. A poke that raised an error once the timeout has passed ends
    the wait as a timeout too: retries never keep a sensor past its timeout."""
    tx, c = machine.tx, t.step_runs.c
    row = tx.conn.execute(
        select(c.sensor_first_poke_at, c.sensor_first_attempt, c.sensor_pokes, c.retry_base).where(
            c.run_id == machine.run_id, c.step == step.name
        )
    ).one()
    new_wait = row.sensor_first_attempt is None or (row.retry_base or 0) >= row.sensor_first_attempt
    if new_wait:  # the first poke, or the first since an operator's retry
        first_at, pokes = _started_at(machine, step.name, number) or tx.now, 1
    else:
        first_at, pokes = as_utc(row.sensor_first_poke_at) or tx.now, (row.sensor_pokes or 0) + 1
    policy = policy_of(step.sensor or {})
    tx.conn.execute(
        update(t.step_runs)
        .where(c.run_id == machine.run_id, c.step == step.name)
        .values(
            sensor_first_poke_at=first_at,
            sensor_first_attempt=number if new_wait else row.sensor_first_attempt,
            sensor_pokes=pokes,
            sensor_last_poke_at=tx.now,
            sensor_last_said=said(state, error)[:MAX_SAID_CHARS],
            sensor_timeout_at=first_at + timedelta(seconds=policy.timeout_seconds),
        )
    )
    timed_out = tx.now >= first_at + timedelta(seconds=policy.timeout_seconds)
    if state == AttemptState.FAILED and timed_out:
        message = said(state, error)  # an error past the timeout ends the wait, retries or not
    elif state != AttemptState.NOT_YET:
        return False
    else:
        message = error or "not yet"
    verdict = next_poke(policy, first_poke_at=first_at, pokes_done=pokes, now=tx.now)
    if isinstance(verdict, PokeAgain):
        _park(machine, step.name, pokes, message, verdict.due)
        return True
    reason = f"sensor timed out after {verdict.waited_seconds:.0f} s ({_pokes(pokes)}; the last said: {message})"
    if verdict.on_timeout == "skip":
        machine.end_running(step.name, number, StepState.SKIPPED, SKIP, f'{reason}; skipped (on_timeout="skip")')
    else:
        machine.end_running(step.name, number, StepState.FAILED, BAD, reason, error=reason)
    return True


def _park(machine: Machine, name: str, pokes: int, message: str, due: datetime) -> None:
    """running -> up_for_retry until ``due``: the scheduler's retry timer queues the next poke."""
    delay = (due - machine.tx.now).total_seconds()
    if machine.tx.cas_step(
        machine.run_id,
        name,
        [StepState.RUNNING],
        StepState.UP_FOR_RETRY,
        reason=f"poke {pokes} said not yet: {message}; next poke in {delay:.1f} s",
        next_attempt_at=due,
    ):
        machine.effects.wake = True
        machine.effects.next_timer = due


def said(state: AttemptState, error: str | None) -> str:
    """What a poke answered, as ``flowkit runs show`` prints it."""
    if state == AttemptState.NOT_YET:
        return f"NotYet({json.dumps(error or 'not yet')})"
    if state == AttemptState.SUCCESS:
        return "done"
    if state == AttemptState.SKIPPED:
        return f"Skip({json.dumps(error or '')})"
    return f"error: {error or 'failed'}"


def failed_tries(machine: Machine, name: str) -> int:
    """The pokes of ``name`` that failed since the operator's latest retry (the attempt
    ending now included): a sensor's retry budget counts these, not its pokes."""
    a, c = t.attempts.c, t.step_runs.c
    base = select(c.retry_base).where(c.run_id == machine.run_id, c.step == name).scalar_subquery()
    return int(
        machine.tx.conn.execute(
            select(func.count()).where(
                a.run_id == machine.run_id,
                a.step == name,
                a.state == AttemptState.FAILED.value,
                a.number > func.coalesce(base, 0),
            )
        ).scalar()
        or 0
    )


def _started_at(machine: Machine, name: str, number: int) -> datetime | None:
    a = t.attempts.c
    started = machine.tx.conn.execute(
        select(a.started_at).where(a.run_id == machine.run_id, a.step == name, a.number == number)
    ).scalar()
    return as_utc(started)


def _pokes(n: int) -> str:
    return f"{n} poke{'s' if n != 1 else ''}"


# -- the worker's side: the poke of flow=NAME ---------------------------------------------------
def flow_poke(store: SqlStore, run_id: str, flow: str) -> PokeOutcome:
    """The answer of ``flow=NAME`` for run ``run_id``: done once a run of ``flow`` for the same
    logical date succeeded. A run with no logical date (triggered by hand) waits for a run of
    ``flow`` that succeeded after it was created."""
    r = t.runs.c
    with store._conn() as conn:
        me = conn.execute(select(r.logical_date, r.created_at).where(r.id == run_id)).one()
        query = select(r.state).where(r.flow_name == flow)
        if me.logical_date is not None:
            query = query.where(r.logical_date == me.logical_date)
            label = as_utc(me.logical_date).isoformat()  # type: ignore[union-attr]
        else:
            query = query.where((r.ended_at >= me.created_at) | r.ended_at.is_(None))
            since = as_utc(me.created_at).isoformat()  # type: ignore[union-attr]
            label = f"this manual run (a success that ended after {since})"
        states = [RunState(s) for s in conn.execute(query.limit(100)).scalars()]
    return upstream_flow_outcome(flow, label, states)


# -- runs show -----------------------------------------------------------------------------------
def sensor_view(row: dict[str, Any]) -> dict[str, Any]:
    """A sensor step's wait as ``flowkit runs show`` (and ``--json``) reports it, from its
    step row: pokes so far, the last poke's time and answer, the next poke, the timeout."""
    waiting = row.get("state") == StepState.UP_FOR_RETRY.value
    return {
        "pokes": row.get("sensor_pokes") or 0,
        "first_poke_at": row.get("sensor_first_poke_at"),
        "last_poke_at": row.get("sensor_last_poke_at"),
        "last_said": row.get("sensor_last_said"),
        "next_poke_at": row.get("next_attempt_at") if waiting else None,
        "times_out_at": row.get("sensor_timeout_at") if not StepState(row["state"]).terminal else None,
    }
