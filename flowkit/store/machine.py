"""The run state machine over one transaction. Not public API.

Whoever records an outcome moves the run forward in the same transaction: the worker that
finished a step (Airflow's "mini scheduler", so a chain hop skips the scheduler) or the
scheduler (lost attempts, timers, waiters). Readiness is event-driven
(docs/design-notes.md#event-driven-readiness): ending a step bumps its downstream steps'
counters (``ok_up``/``bad_up``/``skip_up``) and decides only the steps whose counters
changed; a run ends when its ``steps_left`` reaches zero.

Starting a step either queues an attempt at once (no limit applies and the gate allows it)
or makes it a waiter (state ``scheduled``), which only the scheduler grants, in priority
and fair order, taking its slots from the ledger.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update

from ..graph import Decision, decide_counts
from ..spec import FlowSpec, StepSpec
from ..states import STEP_BAD, AttemptState, RunState, StepState
from . import map_ops
from . import tables as t
from .ledger import Hold, encode_holds, holds_for
from .machine_types import (
    BAD,
    COUNTER,
    OK,
    SKIP,
    WAITING,
    CallbackDue,
    Dispatch,
    Effects,
    Ended,
    Gate,
    dispatched_reason,
    reason_for_skip,
    succeeded_reason,
    task_id_for,
)

__all__ = [
    "BAD",
    "OK",
    "SKIP",
    "CallbackDue",
    "Dispatch",
    "Effects",
    "Gate",
    "Machine",
    "initial_rows",
    "recount",
    "task_id_for",
]

if TYPE_CHECKING:
    from .base import Tx


def _bump(column: str) -> Any:
    c = t.step_runs.c
    return (
        update(t.step_runs)
        .where(c.run_id == bindparam("r"), c.step.in_(bindparam("names", expanding=True)))
        .values({column: getattr(c, column) + 1})
        .returning(c.step, c.state, c.n_up, c.ok_up, c.bad_up, c.skip_up)
    )


_BUMPS = {name: _bump(name) for name in COUNTER.values()}

_MAKE_WAITER = (
    update(t.step_runs)
    .where(
        t.step_runs.c.run_id == bindparam("r"),
        t.step_runs.c.step == bindparam("b_step"),
        t.step_runs.c.state == bindparam("b_old"),
    )
    .values(
        state=StepState.SCHEDULED.value,
        wait_seq=bindparam("b_seq"),
        priority=bindparam("b_prio"),
        updated_at=bindparam("b_now"),
    )
)


class Machine:
    """Moves one run forward inside ``tx``."""

    def __init__(
        self,
        tx: Tx,
        spec: FlowSpec,
        run_id: str,
        *,
        global_cap: int | None,
        gate: Gate | None = None,
        worker_publishes: bool = False,
    ) -> None:
        self.tx = tx
        self.spec = spec
        self.run_id = run_id
        self.global_cap = global_cap
        self.gate = gate
        #: A worker publishes what this transaction queues: the attempts carry its mark
        #: (heartbeat_at) until it confirms the publish, so a worker that dies or freezes
        #: before publishing strands nothing for longer than a lost worker's running steps.
        self.worker_publishes = worker_publishes
        self.effects = Effects()

    # -- outcomes -----------------------------------------------------------------------
    def attempt_ended(
        self,
        name: str,
        number: int,
        state: AttemptState,
        *,
        error: str | None = None,
        retry_delay: float | None = None,
        chosen: list[str] | None = None,
    ) -> None:
        """The latest attempt of ``name`` ended: move the step (running -> ...) and settle."""
        step = self.spec.step(name)
        if step.kind == "sensor":
            from .sensor_ops import poke_ended

            if poke_ended(self, step, number, state, error):  # "not yet": parked, or timed out
                return
        if state == AttemptState.SUCCESS:
            new, outcome = StepState.SUCCESS, OK
            reason = succeeded_reason(number)
        elif state == AttemptState.SKIPPED:
            new, outcome = StepState.SKIPPED, SKIP
            reason = error or "skipped by the step"
        elif (tries := self._tries(step, number)) < step.retry.max_attempts:
            delay = retry_delay if retry_delay is not None else step.retry.delay_after(tries)
            due = self.tx.now + timedelta(seconds=delay)
            if self.tx.cas_step(
                self.run_id,
                name,
                [StepState.RUNNING],
                StepState.UP_FOR_RETRY,
                reason=(
                    f"attempt {_label(number, tries, step.kind)} of {step.retry.max_attempts} "
                    f"failed; retrying in {delay:.1f} s: {error}"
                ),
                next_attempt_at=due,
            ):
                self.effects.wake = True
                self.effects.next_timer = due
                for scope in ("step", "flow"):
                    self.callback(scope, "on_retry", name, StepState.UP_FOR_RETRY.value, number, error)
            return
        else:
            new, outcome = StepState.FAILED, BAD
            reason = f"attempt {_label(number, tries, step.kind)} of {step.retry.max_attempts} failed: {error}"
        self.end_running(name, number, new, outcome, reason, error=error, chosen=chosen)

    def end_running(
        self,
        name: str,
        number: int,
        new: StepState,
        outcome: str,
        reason: str,
        *,
        error: str | None = None,
        chosen: list[str] | None = None,
    ) -> None:
        """End running step ``name`` in state ``new`` (``outcome`` for its downstream steps),
        audited with ``reason``; run its callback and settle."""
        if self.tx.cas_step(self.run_id, name, [StepState.RUNNING], new, reason=reason, ended_at=self.tx.now):
            if new != StepState.SKIPPED and not map_ops.is_instance(name):  # a map step's own
                self.callback(
                    "step",
                    "on_success" if outcome == OK else "on_failure",
                    name,  # at its end
                    new.value,
                    number,
                    error,
                )
            self.settle([(name, outcome, chosen)])

    def _tries(self, step: StepSpec, number: int) -> int:
        """Where attempt ``number`` stands in the retry budget. A sensor's pokes that said
        "not yet" are not tries: only its failed pokes count (store.sensor_ops)."""
        if step.kind == "sensor":
            from .sensor_ops import failed_tries

            return failed_tries(self, step.name)
        return number - self._retry_base(step.name)

    def _retry_base(self, name: str) -> int:
        """Attempts made before an operator's latest retry of ``name`` (its budget restarts)."""
        c = t.step_runs.c
        return int(
            self.tx.conn.execute(select(c.retry_base).where(c.run_id == self.run_id, c.step == name)).scalar() or 0
        )

    def settle(self, ended: Iterable[Ended]) -> None:
        """Propagate ended steps to their downstream steps, then start what became ready."""
        work = deque(map_ops.route_ended(self, ended))  # instances count down their map step
        count = 0
        to_start: list[str] = []
        while work:
            name, outcome, chosen = work.popleft()
            count += 1
            downs = self.spec.downstream_of(name)
            if not downs:
                continue
            groups: dict[str, list[str]] = {}
            if outcome == OK and self.spec.step(name).kind == "branch":
                picked = set(chosen if chosen is not None else self._branch_choice(name))
                for d in downs:
                    groups.setdefault(OK if d in picked else SKIP, []).append(d)
            else:
                groups[outcome] = list(downs)
            for kind, names in groups.items():
                rows = self.tx.conn.execute(_BUMPS[COUNTER[kind]], {"r": self.run_id, "names": names})
                ready, ended_now = self.decide_rows(rows)
                to_start += ready
                work.extend(ended_now)
        if to_start:
            self.start(sorted(to_start, key=self.spec.position.__getitem__), StepState.PENDING)
        if count:
            self._steps_ended(count)

    def decide_rows(self, rows: Iterable[Any], *, context: str = "") -> tuple[list[str], list[Ended]]:
        """Decide the pending steps among ``rows`` (each with ``step``, ``n_up``, ``ok_up``,
        ``bad_up``, ``skip_up``, and ``state`` if it may not be pending) from their counters,
        in the flow's order: end those their trigger rule skips or fails (audited with
        :func:`~.machine_types.reason_for_skip`, and ``context`` after it when given), and
        return the names that are ready to start and the steps this ended, for the caller to
        start and settle. Every path that decides from counters goes through here."""
        ready: list[str] = []
        ended: list[Ended] = []
        pending = [r for r in rows if getattr(r, "state", StepState.PENDING.value) == StepState.PENDING.value]
        for row in sorted(pending, key=lambda r: self.spec.position[r.step]):
            decision = decide_counts(self.spec.step(row.step).trigger, row.n_up, row.ok_up, row.bad_up, row.skip_up)
            if decision == Decision.WAIT:
                continue
            if decision == Decision.RUN:
                ready.append(row.step)
                continue
            new = StepState.SKIPPED if decision == Decision.SKIP else StepState.UPSTREAM_FAILED
            why = reason_for_skip(
                decision, skipped=row.skip_up, not_chosen=decision == Decision.SKIP and self._not_chosen(row.step)
            )
            if self.tx.cas_step(
                self.run_id,
                row.step,
                [StepState.PENDING],
                new,
                ended_at=self.tx.now,
                reason=f"{why} ({context})" if context else why,
            ):
                ended.append((row.step, SKIP if new == StepState.SKIPPED else BAD, None))
        return ready, ended

    def _not_chosen(self, name: str) -> bool:
        """Whether a branch upstream of ``name`` succeeded and chose other steps (a branch's
        result is its choice; one that did not succeed has none)."""
        branches = [u for u in self.spec.step(name).upstream if self.spec.step(u).kind == "branch"]
        if not branches:
            return False
        found = self.tx.results(self.run_id, branches)
        return any(name not in ([v] if isinstance(v, str) else list(v or [])) for v in found.values())

    def decide_pending(self, context: str, *, counted_only: bool = False) -> None:
        """Decide every pending step of the run from its counters (after they were rebuilt:
        a recount, an operator's retry): start the ready ones, end the ones their trigger
        rule skips or fails (``context`` says what decided them again in their audit
        reason), and end the run if nothing is left.

        ``counted_only``: just the pending steps whose upstreams have all ended (what a
        worker's finish leaves to its follow-up), filtered in SQL, so a big run's sweep does
        not bring every pending row of it to Python."""
        c = t.step_runs.c
        query = select(c.step, c.n_up, c.ok_up, c.bad_up, c.skip_up).where(
            c.run_id == self.run_id, c.state == StepState.PENDING.value, c.map_parent.is_(None)
        )  # instances held back by max_parallel: map_ops starts them
        if counted_only:
            query = query.where(c.n_up > 0, c.ok_up + c.bad_up + c.skip_up >= c.n_up)
        to_start, ended = self.decide_rows(self.tx.conn.execute(query).all(), context=context)
        if to_start:
            self.start(to_start, StepState.PENDING)
        if ended:
            self.settle(ended)
        left = self.tx.conn.execute(select(t.runs.c.steps_left).where(t.runs.c.id == self.run_id)).scalar()
        if left == 0:
            self.finish_run()

    def _branch_choice(self, name: str) -> list[str]:
        value = self.tx.results(self.run_id, [name]).get(name)
        return [value] if isinstance(value, str) else list(value or [])

    def _steps_ended(self, count: int) -> None:
        r = t.runs.c
        left = self.tx.conn.execute(
            update(t.runs).where(r.id == self.run_id).values(steps_left=r.steps_left - count).returning(r.steps_left)
        ).scalar()
        if left == 0:
            self.finish_run()

    def finish_run(self) -> None:
        c = t.step_runs.c
        rows = self.tx.conn.execute(
            select(c.step, c.state).where(
                c.run_id == self.run_id, c.state.in_([s.value for s in STEP_BAD]), c.map_parent.is_(None)
            )
        ).all()  # a map step speaks for its instances
        bad = sorted(r.step for r in rows)
        failed = sorted(r.step for r in rows if r.state != StepState.UPSTREAM_FAILED.value)
        final = RunState.FAILED if bad else RunState.SUCCESS
        reason = f"failed steps: {', '.join(failed or bad)}" if bad else "all steps done"
        values: dict[str, Any] = {}
        if bad and self.spec.compensations:
            from .saga import compensate_or_conclude

            verdict = compensate_or_conclude(self, failed or bad)
            if verdict is None:
                return  # compensations run first; the run is decided again when they end
            reason, values["outcome"] = verdict
        if self.tx.cas_run(self.run_id, [RunState.RUNNING], final, ended_at=self.tx.now, reason=reason, **values):
            self.effects.ended_runs.append(self.run_id)
            self.effects.wake = True
            self.callback(
                "flow", "on_failure" if bad else "on_success", None, final.value, error=reason if bad else None
            )

    def callback(
        self, scope: str, kind: str, step: str | None, state: str, attempt: int | None = None, error: str | None = None
    ) -> None:
        """Write the ``kind`` callback of the flow or of ``step`` (``scope``) to the outbox, if
        it defines one; it is published after the commit and runs on a worker."""
        if scope == "step" and step is None:
            raise ValueError(f"run {self.run_id}: a step callback ({kind}) needs its step")
        step_spec = self.spec.step(step) if scope == "step" and step is not None else None
        if kind not in (step_spec or self.spec).callbacks:
            return
        queue = step_spec.queue if step_spec else None
        due = CallbackDue(str(uuid.uuid4()), self.run_id, self.spec.name, scope, kind, step, queue)
        self.tx.conn.execute(
            insert(t.callbacks).values(
                id=due.id,
                run_id=self.run_id,
                step=step,
                scope=scope,
                kind=kind,
                state=state,
                attempt=attempt,
                error=error,
                queue=queue,
                created_at=self.tx.now,
                dispatched_at=self.tx.now,
            )
        )
        self.effects.callbacks.append(due)

    # -- starting steps -------------------------------------------------------------------
    def start(self, names: list[str], old: StepState) -> None:
        """Queue ``names`` (their state is ``old``, locked by this transaction) or make them
        waiters."""
        if "approval" in self.spec.kinds:
            from .approvals import await_decisions

            names = await_decisions(self, names, old)  # approvals wait for a person, not a slot
        if "compensation" in self.spec.kinds:
            from .saga import expand_ready

            names = expand_ready(self, names, old)  # a map step's compensation: one per instance
        direct: list[str] = []
        waiters: list[str] = []
        names = map_ops.expand_ready(self, names, old)  # map steps expand into instances
        for name in names:
            step = self.spec.step(name)
            if self.gate is not None and not holds_for(self.spec, step, self.global_cap) and self.gate(step):
                direct.append(name)
            else:
                waiters.append(name)
        if direct:
            self.queue(direct, old, holds={})
        if waiters:
            self._wait(waiters, old)

    def queue(self, names: list[str], old: StepState, holds: dict[str, list[Hold]]) -> list[str]:
        """``old`` -> queued, with a new attempt each; returns the names that were not in
        state ``old`` any more (another actor moved them), which got no attempt."""
        tx, now = self.tx, self.tx.now
        c = t.step_runs.c
        lost: list[str] = []
        # The step row counts its attempts: a retry timer, a waiter or a step an operator
        # retried goes on from its last number, so task ids never collide.
        numbers = {
            row.step: row.attempts
            for row in tx.conn.execute(
                update(t.step_runs)
                .where(c.run_id == self.run_id, c.step.in_(names), c.state == old.value)
                .values(
                    state=StepState.QUEUED.value,
                    attempts=c.attempts + 1,
                    next_attempt_at=None,
                    wait_seq=None,
                    updated_at=now,
                )
                .returning(c.step, c.attempts)
            )
        }
        rows = []
        for name in names:
            if name not in numbers:
                lost.append(name)
                continue
            number = numbers[name]
            task_id = task_id_for(self.run_id, name, number)
            rows.append(
                {
                    "run_id": self.run_id,
                    "step": name,
                    "number": number,
                    "task_id": task_id,
                    "state": AttemptState.QUEUED.value,
                    "deliveries": 0,
                    "dispatched_at": now,
                    "heartbeat_at": now if self.worker_publishes else None,
                    "holds": encode_holds(holds.get(name, [])),
                    "interruptions": 0,
                }
            )
            tx.event(
                "step_state",
                run_id=self.run_id,
                step=name,
                old=old.value,
                new=StepState.QUEUED.value,
                attempt=number,
                reason=dispatched_reason(number),
            )
            self.effects.to_send.append(Dispatch(self.run_id, self.spec.name, self.spec.step(name), number, task_id))
        if rows:
            tx.conn.execute(insert(t.attempts), rows)
        return lost

    def _wait(self, names: list[str], old: StepState) -> None:
        """Make ``names`` waiters; ``wait_seq`` interleaves runs (the k-th waiter of each run)."""
        r = t.runs.c
        last = self.tx.conn.execute(
            update(t.runs).where(r.id == self.run_id).values(waits=r.waits + len(names)).returning(r.waits)
        ).scalar() or len(names)
        first = last - len(names) + 1
        # One statement for all (executemany): a fan-out of 2,000 makes 2,000 waiters at once.
        self.tx.conn.execute(
            _MAKE_WAITER,
            [
                {
                    "r": self.run_id,
                    "b_step": name,
                    "b_old": old.value,
                    "b_seq": first + i,
                    "b_prio": self.spec.step(name).priority or 0,
                    "b_now": self.tx.now,
                }
                for i, name in enumerate(names)
            ],
        )
        for name in names:
            self.tx.event(
                "step_state",
                run_id=self.run_id,
                step=name,
                old=old.value,
                new=StepState.SCHEDULED.value,
                reason=WAITING,
            )
        self.effects.wake = True


def _label(number: int, tries: int, kind: str = "task") -> str:
    """An attempt's number, and its place in the retry budget when an operator retried it
    (a sensor's: among its failed pokes)."""
    if kind == "sensor" and number != tries:
        return f"{number} (failed poke {tries})"
    return str(number) if number == tries else f"{number} (try {tries} since the operator's retry)"


def initial_rows(spec: FlowSpec, run_id: str, now: datetime) -> list[dict[str, Any]]:
    """The step rows of a new run: every step pending with its upstream count."""
    return [
        {
            "run_id": run_id,
            "step": s.name,
            "state": StepState.PENDING.value,
            "attempts": 0,
            "updated_at": now,
            "n_up": len(s.upstream),
            "ok_up": 0,
            "bad_up": 0,
            "skip_up": 0,
            "priority": s.priority or 0,
        }
        for s in spec.steps
    ]


def recount(tx: Tx, spec: FlowSpec, run_id: str, pending: Iterable[str] = ()) -> None:
    """Rebuild a run's counters from its step states (runs created before they existed, an
    operator's retry or mark). Steps in ``pending`` count as not ended yet: the caller is
    about to end them and settle them (Machine.settle)."""
    states = {
        r.step: StepState(r.state)
        for r in tx.conn.execute(
            select(t.step_runs.c.step, t.step_runs.c.state).where(
                t.step_runs.c.run_id == run_id, t.step_runs.c.map_parent.is_(None)
            )
        )
    }
    states.update({name: StepState.PENDING for name in pending})
    branches = [s.name for s in spec.steps if s.kind == "branch" and states.get(s.name) == StepState.SUCCESS]
    chosen = (
        {b: [v] if isinstance(v, str) else list(v or []) for b, v in tx.results(run_id, branches).items()}
        if branches
        else {}
    )
    c = t.step_runs.c
    for step in spec.steps:
        ups = [
            StepState.SKIPPED if u in chosen and step.name not in chosen[u] else states.get(u, StepState.PENDING)
            for u in step.upstream
        ]
        tx.conn.execute(
            update(t.step_runs)
            .where(c.run_id == run_id, c.step == step.name)
            .values(
                n_up=len(ups),
                ok_up=sum(s == StepState.SUCCESS for s in ups),
                bad_up=sum(s in STEP_BAD for s in ups),
                skip_up=sum(s == StepState.SKIPPED for s in ups),
            )
        )
    left = sum(not s.terminal for s in states.values())
    tx.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(steps_left=left))
