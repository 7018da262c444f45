"""Operators' actions on flows and runs: pause, unpause, cancel, retry, mark. Not public API.

Each action is one transaction of compare-and-set changes, recorded in the audit trail with
the operator's name (the transaction's actor) and reason, and returns an
:class:`ActionResult`: a one-line summary, the Celery task ids of the attempts it stopped,
and the wake-up to publish so the scheduler acts at once (:func:`notify`). A step an action
makes ready becomes a waiter (state ``scheduled``) that the scheduler grants: the operator's
process never publishes an attempt itself.

How each action ends:

* **cancel**: every step not yet ended becomes ``cancelled``; live attempts end as
  ``cancelled`` and give their ledger holds back in the same transaction; the run becomes
  ``cancelled``. A worker that finishes (or is interrupted) afterwards loses its
  compare-and-set on the attempt, so the late outcome is discarded.
* **retry**: the chosen steps, and the steps that only ended because of them
  (``upstream_failed``, or skipped by a trigger rule), go back to ``pending``; the readiness
  counters are rebuilt (:func:`.machine.recount`), the run goes back to ``running`` and the
  machine decides the pending steps. Attempt numbers go on (task ids never collide) and each
  retried step gets its whole retry budget again (``step_runs.retry_base``).
* **mark**: a step with no live attempt takes ``success`` or ``skipped``; the steps that only
  ended because of it go back to ``pending`` and :meth:`.machine.Machine.settle` decides its
  downstream. A finished run is reopened and ends again by the machine's rule: ``success``
  when no step is failed, upstream_failed or cancelled, else ``failed``.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import OperationalError

from ..config import Settings
from ..errors import ActionRefused, NotFoundError
from ..spec import FlowSpec
from ..states import AttemptState, RunState, StepState
from . import saga
from . import tables as t
from .base import row_dict, upsert
from .ledger import Hold, decode_holds
from .machine import OK, SKIP, recount
from .run_lanes import RunAdmission

if TYPE_CHECKING:
    from .base import Tx
    from .sql import SqlStoreBase as _Base
else:
    _Base = object

log = logging.getLogger(__name__)

#: Times an action runs again when PostgreSQL aborted it in a conflict with a concurrent
#: transaction (a worker finishing a step of the same run): nothing of it was written.
CONFLICT_RETRIES = 3
#: How often a cancel reads the run's live steps again in its transaction: a worker that
#: commits meanwhile (a claim, a finish that queued a downstream step) moves a step on.
CANCEL_PASSES = 5
_LIVE_STEP = [s.value for s in StepState if not s.terminal]
_LIVE_ATTEMPT = [AttemptState.QUEUED.value, AttemptState.RUNNING.value]


@dataclass
class ActionResult:
    """What an operator's action did, and what is left to do after its commit."""

    summary: str
    #: The event that wakes the scheduler (None: it has nothing to do now).
    wake: dict[str, Any] | None = None
    #: Celery task ids of the attempts the action ended: revoke them on the broker (a queued
    #: message is dropped; a running prefork child gets SIGTERM).
    revoke: list[str] = field(default_factory=list)


@dataclass
class Notified:
    """What :func:`notify` got done after an action's commit."""

    #: One line each: what could not be done (the action itself is committed).
    warnings: list[str] = field(default_factory=list)
    #: Per revoked task id that a worker was running: what that worker did about it
    #: (``flowkit.worker.stop_cancelled``); None when the dispatcher cannot tell.
    stopped: dict[str, str] | None = None


def notify(result: ActionResult, *, dispatcher: Any = None, events: Any = None) -> Notified:
    """Revoke the stopped attempts and wake the scheduler. The action is already committed,
    so a broker that cannot be reached costs a delay, never a state."""
    done = Notified()
    revoke = getattr(dispatcher, "revoke", None)
    if result.revoke and revoke is not None:
        try:
            done.stopped = revoke(result.revoke)
        except Exception as exc:
            done.warnings.append(
                f"could not revoke {len(result.revoke)} task(s) on the broker ({exc}); workers skip "
                "their messages anyway, but a step still running is not stopped (its outcome is "
                "discarded when it ends)"
            )
    if result.wake is not None and events is not None:
        try:
            events.publish(result.wake)
        except Exception as exc:
            done.warnings.append(f"the scheduler was not woken ({exc}); it acts at its next sweep")
    return done


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _again_on_conflict(action: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run the action's transaction again after a deadlock or serialization failure."""

    @functools.wraps(action)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return action(*args, **kwargs)
            except OperationalError as exc:
                if attempt == CONFLICT_RETRIES or getattr(exc.orig, "sqlstate", None) not in ("40P01", "40001"):
                    raise
                log.warning(
                    "%s: conflict with a concurrent transaction (%s); trying again",
                    action.__name__,
                    getattr(exc.orig, "sqlstate", ""),
                )
        raise AssertionError("unreachable")

    return wrapper


def _why(verb: str, by: str, reason: str) -> str:
    return f"{verb} by {by}: {reason}" if reason else f"{verb} by {by}"


class OperatorOps(_Base):
    # -- flows ---------------------------------------------------------------------------
    def is_paused(self, flow: str) -> bool:
        with self._conn() as conn:
            return bool(conn.execute(select(t.flows.c.paused).where(t.flows.c.name == flow)).scalar())

    def pause_flow(self, flow: str, *, by: str, reason: str = "") -> ActionResult:
        """No new run of ``flow`` starts (triggered runs stay queued, cron ticks are not
        created); running runs finish."""
        self.flow_spec(flow)  # an unknown flow: one line with the closest name
        with self.tx(by) as tx:
            if not self._set_paused(tx, flow, True):
                raise ActionRefused(f'flow "{flow}" is already paused; `flowkit flows unpause {flow}` resumes it')
            tx.event("operator_pause", flow=flow, old="active", new="paused", reason=_why("paused", by, reason))
            queued, running = self._runs_by_state(tx, flow)
        return ActionResult(
            f'flow "{flow}": paused; {queued} queued run(s) wait for '
            f"`flowkit flows unpause {flow}`, {running} running run(s) finish"
        )

    def unpause_flow(self, flow: str, *, by: str, reason: str = "") -> ActionResult:
        """Runs of ``flow`` start again; its queued runs start now (within max_active_runs)."""
        self.flow_spec(flow)
        with self.tx(by) as tx:
            if not self._set_paused(tx, flow, False):
                raise ActionRefused(f'flow "{flow}" is not paused; `flowkit flows pause {flow}` pauses it')
            tx.event("operator_unpause", flow=flow, old="paused", new="active", reason=_why("unpaused", by, reason))
            queued, _ = self._runs_by_state(tx, flow)
        return ActionResult(
            f'flow "{flow}": unpaused; {queued} queued run(s) start (within its max_active_runs)',
            wake={"type": "flow_unpaused", "flow": flow},
        )

    @staticmethod
    def _set_paused(tx: Tx, flow: str, paused: bool) -> bool:
        f = t.flows.c
        return bool(
            tx.conn.execute(
                update(t.flows).where(f.name == flow, f.paused.is_(not paused)).values(paused=paused)
            ).rowcount
            == 1
        )

    @staticmethod
    def _runs_by_state(tx: Tx, flow: str) -> tuple[int, int]:
        r = t.runs.c
        counts = {
            row.state: row.n
            for row in tx.conn.execute(
                select(r.state, func.count().label("n")).where(r.flow_name == flow).group_by(r.state)
            )
        }
        return counts.get(RunState.QUEUED.value, 0), counts.get(RunState.RUNNING.value, 0)

    def flow_events(self, flow: str, since: Any = None, until: Any = None) -> list[dict[str, Any]]:
        """A flow's own events (pause, unpause) between ``since`` and ``until``."""
        e = t.events.c
        q = select(t.events).where(e.flow_name == flow, e.run_id.is_(None)).order_by(e.id)
        if since is not None:
            q = q.where(e.at >= since)
        if until is not None:
            q = q.where(e.at <= until)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q)]

    # -- runs ----------------------------------------------------------------------------
    @_again_on_conflict
    def cancel_run(self, run_id: str, *, by: str, reason: str = "") -> ActionResult:
        """Cancel every step not yet ended and the run; live attempts end and give their
        slots back in the same transaction."""
        why = _why("cancelled", by, reason)
        with self.tx(by) as tx:
            state = self._run_state(tx, run_id)
            if state.terminal:
                hint = (
                    f"`flowkit runs retry {run_id}` runs its failed steps again"
                    if state != RunState.SUCCESS
                    else "it has nothing left to run"
                )
                raise ActionRefused(f"run {run_id} is already {state.value}; nothing to cancel ({hint})")
            steps, stopped, holds = self._cancel_steps(tx, run_id, why)
            if not tx.cas_run(run_id, [state], RunState.CANCELLED, reason=why, ended_at=tx.clock, steps_left=0):
                # it ended meanwhile (its last step finished): undo all of this (rollback)
                now = self._run_state(tx, run_id)
                raise ActionRefused(
                    f"run {run_id} ended as {now.value} while it was being cancelled; nothing to cancel"
                )
            slots = sum(n for k, n in holds if k.startswith("pool:"))
            detail = (
                f"{len(steps)} step(s) cancelled, {len(stopped)} attempt(s) stopped, {slots} pool slot(s) given back"
            )
            tx.event(
                "operator_cancel",
                run_id=run_id,
                old=state.value,
                new=RunState.CANCELLED.value,
                reason=f"{why} ({detail})",
            )
        return ActionResult(
            f"run {run_id}: cancelled ({detail})", revoke=stopped, wake={"type": "run_cancelled", "run_id": run_id}
        )

    def _cancel_steps(self, tx: Tx, run_id: str, why: str) -> tuple[list[str], list[str], list[Hold]]:
        """End the run's live attempts, give their slots back, and cancel its live steps.

        Locks are taken in the order a worker's claim and finish take them (the attempt,
        then the ledger, then step rows, then the run): a cancel used to lock a step and
        then its attempt, and deadlocked with finishes of the same run (40P01, retried after
        about a second each). An attempt is ended before its step, so a claim that comes
        after the cancel finds it cancelled and never starts the body; one that came before
        holds the attempt until it commits, and the cancel then stops it (revoke)."""
        c = t.step_runs.c
        cancelled: list[str] = []
        stopped: list[str] = []
        holds: list[Hold] = []
        a = t.attempts.c
        for _ in range(CANCEL_PASSES):
            ended = self._cancel_live_attempts(tx, run_id, why)
            stopped += [task_id for task_id, _ in ended.values()]
            given = [h for _, hs in ended.values() for h in hs]
            if given:
                tx.ledger.lock(k for k, _ in given)  # in key order: no deadlock with a grant
                tx.ledger.give_back(given)
                holds += given
            rows = tx.conn.execute(
                select(c.step, c.state, c.attempts).where(c.run_id == run_id, c.state.in_(_LIVE_STEP)).order_by(c.step)
            ).all()
            if not rows:
                return cancelled, stopped, holds
            # read after the steps: an attempt queued since comes with its step's move, which
            # the step's compare-and-set below then loses
            live = {
                (r.step, r.number)
                for r in tx.conn.execute(select(a.step, a.number).where(a.run_id == run_id, a.state.in_(_LIVE_ATTEMPT)))
            }
            for row in rows:
                old = StepState(row.state)
                if (row.step, row.attempts) in live:
                    continue  # an attempt queued since this pass began: the next pass ends it first
                if tx.cas_step(
                    run_id,
                    row.step,
                    [old],
                    StepState.CANCELLED,
                    reason=why,
                    ended_at=tx.clock,
                    next_attempt_at=None,
                    wait_seq=None,
                ):
                    cancelled.append(row.step)
        raise ActionRefused(f"run {run_id} kept changing while it was being cancelled; try again")

    @staticmethod
    def _cancel_live_attempts(tx: Tx, run_id: str, why: str) -> dict[tuple[str, int], tuple[str, list[Hold]]]:
        """Cancel the run's queued and running attempts, locked in primary-key order; returns
        (step, number) -> (task id, holds) of those this call ended (an attempt already
        cancelled by an earlier pass is not live any more)."""
        a = t.attempts.c
        live = tx.conn.execute(
            select(a.step, a.number, a.state)
            .where(a.run_id == run_id, a.state.in_(_LIVE_ATTEMPT))
            .order_by(a.step, a.number)
            .with_for_update()
        ).all()
        ended: dict[tuple[str, int], tuple[str, list[Hold]]] = {}
        for row in live:
            got = tx.conn.execute(
                update(t.attempts)
                .where(
                    a.run_id == run_id,
                    a.step == row.step,
                    a.number == row.number,
                    a.state.in_(_LIVE_ATTEMPT),
                )
                .values(state=AttemptState.CANCELLED.value, ended_at=tx.clock, error=why)
                .returning(a.task_id, a.holds)
            ).first()
            if got is None:
                continue
            ended[(row.step, row.number)] = (got.task_id, decode_holds(got.holds))
            tx.event(
                "attempt_cancelled",
                run_id=run_id,
                step=row.step,
                attempt=row.number,
                old=row.state,
                new=AttemptState.CANCELLED.value,
                reason=why,
            )
        return ended

    @_again_on_conflict
    def retry_run(
        self, run_id: str, *, steps: Iterable[str] = (), downstream: bool = False, by: str, reason: str = ""
    ) -> ActionResult:
        """Run a finished run's failed, upstream_failed and cancelled steps again (or the
        ``steps`` named, and with ``downstream`` everything downstream of them). In a run
        that compensated, the steps its compensations undid run again too (saga.reopen)."""
        named = list(dict.fromkeys(steps))
        why = _why("retried", by, reason)
        with self.tx(by) as tx:
            state = self._run_state(tx, run_id)
            if not state.terminal:
                raise ActionRefused(
                    f"run {run_id} is {state.value}; retry it once it has ended, or "
                    f"cancel it first (`flowkit runs cancel {run_id}`)"
                )
            spec = self._run_spec(tx, run_id)
            for name in named:
                _check_step(spec, name)
            rows = self._step_rows(tx, run_id)
            chosen = self._chosen_for_retry(tx, spec, run_id, state, rows, named, downstream, why)
            self._check_run_cap(tx, spec, run_id)
            order = [n for n in spec.step_names if n in chosen and rows[n].state != StepState.PENDING.value]
            _back_to_pending(tx, run_id, rows, order, why)
            tx.cas_run(
                run_id, [state], RunState.RUNNING, operator=True, reason=why, ended_at=None, outcome=None
            )  # decided again when the run ends again
            tx.event(
                "operator_retry",
                run_id=run_id,
                old=state.value,
                new=RunState.RUNNING.value,
                reason=f"{why} (steps: {', '.join(order)})",
            )
            recount(tx, spec, run_id)
            machine = tx.machine(spec, run_id, global_cap=None)  # no gate: ready steps wait for the scheduler
            machine.decide_pending("decided again after an operator's retry")
        return ActionResult(
            f"run {run_id}: running again; {len(order)} step(s) back to pending: {', '.join(order)}",
            wake={"type": "run_retried", "run_id": run_id},
        )

    def _chosen_for_retry(
        self,
        tx: Tx,
        spec: FlowSpec,
        run_id: str,
        state: RunState,
        rows: dict[str, Any],
        named: list[str],
        downstream: bool,
        why: str,
    ) -> set[str]:
        """The steps a retry runs again: those named (and their downstream), else the failed,
        upstream_failed and cancelled ones; the steps a compensation undid; and the steps
        that ended only because of these."""
        own = set(spec.step_names)
        if named:
            chosen = set(named) | (_downstream_closure(spec, named) if downstream else set())
        else:
            bad = {StepState.FAILED, StepState.UPSTREAM_FAILED, StepState.CANCELLED}
            chosen = {n for n, row in rows.items() if n in own and StepState(row.state) in bad}
        hint = "".join(f" --step {n}" for n in spec.step_names if n in chosen and n not in named)
        chosen |= saga.reopen(tx, spec, run_id, decided=named, why=why, hint=hint)
        if not chosen:
            raise ActionRefused(
                f"run {run_id} is {state.value} and has no failed, upstream_failed "
                "or cancelled step; name the steps to run again with --step"
            )
        return chosen | self._consequences(tx, spec, run_id, rows, chosen)

    @_again_on_conflict
    def mark_step(
        self,
        run_id: str,
        step: str,
        state: StepState | str,
        *,
        by: str,
        reason: str = "",
        result: str | None = None,
        max_result_bytes: int = Settings.max_result_bytes,
    ) -> ActionResult:
        """Give a step with no live attempt the state ``success`` or ``skipped``; its
        downstream settles, and a finished run ends again by the machine's rule.

        A step marked success has a result: ``result`` (JSON text, at most
        ``max_result_bytes``), else null, or for a map step the list of its instances'
        results. A step marked skipped has none."""
        target = StepState(state)
        if target not in (StepState.SUCCESS, StepState.SKIPPED):
            raise ActionRefused(f"a step can be marked success or skipped, not {target.value}")
        _check_mark_result(target, result, max_result_bytes)
        why = _why(f"marked {target.value}", by, reason)
        with self.tx(by) as tx:
            run_state = self._run_state(tx, run_id)
            spec = self._run_spec(tx, run_id)
            _check_step(spec, step)
            rows = self._step_rows(tx, run_id)
            old = StepState(rows[step].state)
            _check_markable(run_id, run_state, step, old, target, rows[step].attempts)
            redo = self._reopen_for_mark(tx, spec, run_id, run_state, step, rows, why)
            for name in sorted(
                self._consequences(tx, spec, run_id, rows, {step} | redo) - {step} - redo, key=spec.position.__getitem__
            ):
                tx.cas_step(
                    run_id,
                    name,
                    [StepState(rows[name].state)],
                    StepState.PENDING,
                    operator=True,
                    reason=f"{why} (upstream {step})",
                    ended_at=None,
                    wait_seq=None,
                )
            # The step counts as not ended yet, so settling it counts it once (steps_left).
            recount(tx, spec, run_id, pending=[step])
            tx.cas_step(
                run_id,
                step,
                [old],
                target,
                operator=True,
                reason=why,
                ended_at=tx.now,
                next_attempt_at=None,
                wait_seq=None,
            )
            given = _store_mark_result(tx, spec, run_id, step, target, result)
            tx.event(
                "operator_mark",
                run_id=run_id,
                step=step,
                old=old.value,
                new=target.value,
                reason=why if given is None else f"{why}; result: {_brief(given)}",
            )
            machine = tx.machine(spec, run_id, global_cap=None)
            machine.settle([(step, OK if target == StepState.SUCCESS else SKIP, None)])
            if redo:
                machine.decide_pending("decided again after an operator's mark")
            left = tx.conn.execute(select(t.runs.c.steps_left).where(t.runs.c.id == run_id)).scalar()
            now = self._run_state(tx, run_id)
        ended = f"; the run ended {now.value}" if now.terminal else ""
        reopened = " (reopened)" if run_state.terminal and not now.terminal else ""
        return ActionResult(
            f"run {run_id} step {step}: {old.value} -> {target.value}; run "
            f"{now.value}{reopened}, {left} step(s) left{ended}",
            wake={"type": "step_marked", "run_id": run_id},
        )

    def _reopen_for_mark(
        self, tx: Tx, spec: FlowSpec, run_id: str, run_state: RunState, step: str, rows: dict[str, Any], why: str
    ) -> set[str]:
        """Reopen a finished run for a mark of ``step``; return the steps that go back to
        pending with it. Marking a compensation step reopens the compensation: the run's
        outcome is decided again at its end. Marking one of the run's own steps in a run
        that compensated redoes the undone steps first (saga.reopen), as a retry does."""
        if not run_state.terminal:
            return set()
        self._check_run_cap(tx, spec, run_id)
        if spec.step(step).kind == "compensation":
            tx.cas_run(
                run_id,
                [run_state],
                RunState.RUNNING,
                operator=True,
                reason=why,
                ended_at=None,
                outcome=saga.COMPENSATING,
            )
            return set()
        redo = saga.reopen(tx, spec, run_id, decided=[step], why=why)
        tx.cas_run(run_id, [run_state], RunState.RUNNING, operator=True, reason=why, ended_at=None, outcome=None)
        order = [n for n in spec.step_names if n in redo]
        _back_to_pending(tx, run_id, rows, order, f"{why} (its compensation undid it: it runs again)")
        return set(order)

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _run_state(tx: Tx, run_id: str) -> RunState:
        value = tx.conn.execute(select(t.runs.c.state).where(t.runs.c.id == run_id)).scalar()
        if value is None:
            raise NotFoundError(f"no run with id {run_id!r}; see `flowkit runs list`")
        return RunState(value)

    @staticmethod
    def _run_spec(tx: Tx, run_id: str) -> FlowSpec:
        run = tx.conn.execute(select(t.runs.c.flow_name, t.runs.c.version).where(t.runs.c.id == run_id)).one()
        return tx.flow_spec(run.flow_name, run.version)

    @staticmethod
    def _step_rows(tx: Tx, run_id: str) -> dict[str, Any]:
        c = t.step_runs.c
        return {row.step: row for row in tx.conn.execute(select(c.step, c.state, c.attempts).where(c.run_id == run_id))}

    @staticmethod
    def _check_run_cap(tx: Tx, spec: FlowSpec, run_id: str) -> None:
        """Reopening a run makes it active: refuse past its lane's cap (the flow's
        max_active_runs, or its backfill's: store/run_lanes.py, the one run-start rule)."""
        r = t.runs.c
        run = tx.conn.execute(select(r.flow_name, r.trigger, r.backfill_id).where(r.id == run_id)).one()
        why = RunAdmission(tx.conn).why_held(run, spec)
        if why:
            raise ActionRefused(f"run {run_id} cannot run again now: {why}; try again when one has ended")

    @staticmethod
    def _consequences(tx: Tx, spec: FlowSpec, run_id: str, rows: dict[str, Any], causes: set[str]) -> set[str]:
        """Steps downstream of ``causes`` that ended only because of them, without running:
        upstream_failed, or skipped by a trigger rule or a branch (not by an operator's mark
        or the step's own Skip). They are decided again once their upstreams end again."""
        marked = {
            row.step
            for row in tx.conn.execute(
                select(t.events.c.step).where(
                    t.events.c.run_id == run_id,
                    t.events.c.action == "operator_mark",
                    t.events.c.new_state == StepState.SKIPPED.value,
                )
            )
        }
        out: set[str] = set()
        todo = list(causes)
        while todo:
            for down in spec.downstream_of(todo.pop()):
                row = rows[down]
                derived = row.state == StepState.UPSTREAM_FAILED.value or (
                    row.state == StepState.SKIPPED.value and row.attempts == 0 and down not in marked
                )
                if derived and down not in out and down not in causes:
                    out.add(down)
                    todo.append(down)
        return out


def _back_to_pending(tx: Tx, run_id: str, rows: dict[str, Any], names: list[str], why: str) -> None:
    """An operator's retry: ``names`` go back to pending with their whole retry budget, and
    lose their results (their downstream steps must not read an old one meanwhile)."""
    for name in names:
        tx.cas_step(
            run_id,
            name,
            [StepState(rows[name].state)],
            StepState.PENDING,
            operator=True,
            reason=why,
            started_at=None,
            ended_at=None,
            next_attempt_at=None,
            wait_seq=None,
            retry_base=rows[name].attempts,
            map_total=None,
            map_left=None,
            map_failed=None,
            map_next=None,
        )
    c, r = t.step_runs.c, t.results.c
    # A map step expands again when it runs: its instances' rows (and results) of the last
    # expansion leave the run; their attempts and events stay, and numbers go on (map_ops).
    instances = select(c.step).where(c.run_id == run_id, c.map_parent.in_(names))
    tx.conn.execute(delete(t.results).where(r.run_id == run_id, or_(r.step.in_(names), r.step.in_(instances))))
    tx.conn.execute(delete(t.step_runs).where(c.run_id == run_id, c.map_parent.in_(names)))


def _check_markable(
    run_id: str, run_state: RunState, step: str, old: StepState, target: StepState, attempts: int
) -> None:
    """Refuse a mark the run or the step is not in a state to take, saying what to do."""
    if run_state == RunState.QUEUED:
        raise ActionRefused(
            f"run {run_id} is queued and has not started; mark its steps once it "
            f"runs, or cancel it (`flowkit runs cancel {run_id}`)"
        )
    if run_state == RunState.CANCELLED:
        raise ActionRefused(
            f"run {run_id} is cancelled; `flowkit runs retry {run_id}` runs its cancelled steps again, then mark"
        )
    if old in (StepState.QUEUED, StepState.RUNNING):
        raise ActionRefused(
            f"run {run_id} step {step} is {old.value} (attempt {attempts}); "
            f"wait for it to end, or cancel the run (`flowkit runs cancel {run_id}`)"
        )
    if old == target:
        raise ActionRefused(f"run {run_id} step {step} is already {target.value}")
    if old == StepState.CANCELLED:
        raise ActionRefused(
            f"run {run_id} step {step} is cancelled; `flowkit runs retry {run_id} --step {step}` runs it again"
        )


#: How much of a marked step's result the audit trail's reason quotes.
MARK_RESULT_QUOTED_CHARS = 300


def _check_mark_result(target: StepState, result: str | None, cap: int) -> None:
    """A mark's ``--result``: JSON, within the results' cap, and only for ``success``."""
    if result is None:
        return
    if target != StepState.SUCCESS:
        raise ActionRefused("a step marked skipped has no result; drop --result, or mark it success")
    try:
        json.loads(result)
    except ValueError as exc:
        raise ActionRefused(
            f"--result is not JSON ({exc}); pass a JSON value, e.g. "
            """--result '{"rows": 3}' or --result null"""
        ) from None
    size = len(result.encode())
    if size > cap:
        raise ActionRefused(
            f"--result is {size:,} bytes, over the {cap:,}-byte cap "
            "(FLOWKIT_MAX_RESULT_BYTES); store the data elsewhere and pass a "
            """pointer to it, e.g. --result '{"uri": "s3://..."}'"""
        )


def _store_mark_result(
    tx: Tx, spec: FlowSpec, run_id: str, step: str, target: StepState, result: str | None
) -> str | None:
    """Store the result of a step marked success, so its downstream steps read one: the one
    given, else the list of a map step's instances' results, else null. Returns it."""
    if target != StepState.SUCCESS:
        return None
    from . import map_ops

    if result is None:
        result = map_ops.instance_results_text(tx.conn, run_id, step) if spec.step(step).kind == "map" else "null"
    upsert(
        tx.conn,
        t.results,
        {"run_id": run_id, "step": step, "value": result, "size": len(result.encode()), "created_at": tx.now},
        ["run_id", "step"],
    )
    return result


def _brief(text: str) -> str:
    if len(text) <= MARK_RESULT_QUOTED_CHARS:
        return text
    return f"{text[:MARK_RESULT_QUOTED_CHARS]}... ({len(text.encode()):,} bytes)"


def _check_step(spec: FlowSpec, name: str) -> None:
    if name in spec.position:
        return
    close = difflib.get_close_matches(name, spec.step_names, n=1)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    raise NotFoundError(
        f'flow "{spec.name}" has no step "{name}".{hint} Its steps: {", ".join(spec.step_names)}',
        flow=spec.name,
        step=name,
    )


def _downstream_closure(spec: FlowSpec, names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    todo = list(names)
    while todo:
        for down in spec.downstream_of(todo.pop()):
            if down not in out:
                out.add(down)
                todo.append(down)
    return out
