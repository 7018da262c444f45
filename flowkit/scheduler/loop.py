"""The scheduler: turns completions into the next dispatches. Not public API.

It never runs user code and never rescans every run: it works on the runs an event
(a completion, a trigger) or a due timer names, plus a slow safety-net sweep (C1).
State lives in SQL; on start it rebuilds everything from there, so a scheduler killed
mid-run continues the run and re-sends only attempts that no worker has started.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..dispatch.base import Dispatch, Dispatcher
from ..errors import DispatchError
from ..graph import Decision, decide
from ..spec import FlowSpec
from ..states import AttemptState, RunState, StepState
from ..store.sql import SqlStore, as_utc, utcnow

log = logging.getLogger(__name__)

_ACTIVE_RUN = (RunState.QUEUED, RunState.RUNNING)


class Scheduler:
    def __init__(
        self,
        store: SqlStore,
        dispatcher: Dispatcher,
        events: Any,
        *,
        sweep_seconds: float = 5.0,
        queued_lease_seconds: float = 300.0,
        lost_after_seconds: float = 30.0,
        visibility_timeout_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
        name: str | None = None,
        on_sweep: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.sweep_seconds = sweep_seconds
        self.queued_lease = timedelta(seconds=queued_lease_seconds)
        # A running attempt silent this long was not redelivered by the broker either. Redis
        # restores unacked messages on a periodic check after the visibility timeout, so the
        # margin is generous: reaping is the net for messages the broker truly lost.
        self.reap_after = timedelta(
            seconds=lost_after_seconds + visibility_timeout_seconds
            + max(60.0, visibility_timeout_seconds / 2))
        self.clock = clock
        self.actor = name or f"scheduler@{socket.gethostname()}"
        self.on_sweep = on_sweep
        self._specs: dict[tuple[str, str], FlowSpec] = {}
        self._branch_choices: dict[tuple[str, str], list[str]] = {}
        self._next_sweep: datetime | None = None
        self._next_timer: datetime | None = None
        self.stats = {"evaluations": 0, "dispatched": 0, "events": 0}

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Rebuild from SQL: old events are dropped, every active run is evaluated once."""
        dropped = self.events.purge()
        log.info("scheduler %s: starting; dropped %s stale events, rebuilding from SQL",
                 self.actor, dropped)
        for run_id in self.store.run_ids_in_states(_ACTIVE_RUN):
            self.evaluate_safely(run_id)
        self.sweep(force_leases=True)

    def run_forever(self, stop: threading.Event) -> None:
        """Loop until ``stop``; a failing database or broker is retried, never fatal."""
        backoff = 0.5
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.start()
                    started = True
                # Bounded waits keep a stop request (SIGTERM) answered within a second.
                self.step_once(max_wait=1.0)
                backoff = 0.5
            except Exception:
                log.exception("scheduler %s: loop error; retrying in %.1f s", self.actor, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def step_once(self, max_wait: float | None = None) -> None:
        now = self.clock()
        wait = self.sweep_seconds
        for due in (self._next_sweep, self._next_timer):
            if due is not None:
                wait = min(wait, max((due - now).total_seconds(), 0.0))
        if max_wait is not None:
            wait = min(wait, max_wait)
        batch = self.events.wait(wait)
        self.stats["events"] += len(batch)
        runs = {e["run_id"] for e in batch if e.get("run_id")}
        now = self.clock()
        if self._next_timer is not None and now >= self._next_timer:
            self._next_timer = None
            runs |= {r for r, _ in self.store.due_retries(now)}
        for run_id in sorted(runs):
            self.evaluate_safely(run_id)
        if self._next_sweep is None or now >= self._next_sweep:
            self.sweep()

    # -- sweep ----------------------------------------------------------------------------
    def sweep(self, force_leases: bool = False) -> None:
        """Safety net: new runs, due timers, expired leases, silent attempts, cron."""
        now = self.clock()
        self._next_sweep = now + timedelta(seconds=self.sweep_seconds)
        if self.on_sweep:
            try:
                self.on_sweep()
            except Exception:
                log.exception("scheduler %s: sweep hook failed", self.actor)
        self.schedule_cron(now)
        due = {r for r, _ in self.store.due_retries(now)}
        for run_id in sorted(due | set(self.store.runs_needing_attention())):
            self.evaluate_safely(run_id)
        self.reap_silent(now)
        self.resend_expired(now, everything=force_leases)
        self._next_timer = self.store.next_retry_at()

    def resend_expired(self, now: datetime, everything: bool = False) -> None:
        """Publish again attempts that were queued but never started (C2).

        On start (``everything``) this covers a crash between the SQL write and the
        publish; the worker skips a duplicate whose attempt already started or finished.
        """
        cutoff = now if everything else now - self.queued_lease
        for a in self.store.expired_leases(cutoff):
            run = self.store.get_run(a["run_id"])
            if RunState(run["state"]).terminal:
                continue
            spec = self.spec(run["flow_name"], run["version"])
            with self.store.tx(self.actor, self.clock()) as tx:
                if not tx.touch_attempt_dispatch(a["run_id"], a["step"], a["number"]):
                    continue
                tx.event("lease_expired", run_id=a["run_id"], step=a["step"], attempt=a["number"],
                         reason="queued attempt not started; published again")
            self._send([Dispatch(a["run_id"], spec.name, spec.step(a["step"]), a["number"],
                                 a["task_id"])])

    def reap_silent(self, now: datetime) -> None:
        """Fail running attempts whose worker went silent and the broker never redelivered (C3)."""
        for a in self.store.silent_attempts(now - self.reap_after):
            with self.store.tx(self.actor, self.clock()) as tx:
                reason = (f"worker {a['worker']} went silent (no heartbeat since "
                          f"{a['heartbeat_at']:%H:%M:%S}) and the broker did not redeliver; "
                          "treated as a failed attempt")
                won = tx.fail_lost_attempt(a["run_id"], a["step"], a["number"], a["heartbeat_at"],
                                           reason)
            if won:
                log.warning("run %s step %s: %s", a["run_id"], a["step"], reason)
                self.evaluate(a["run_id"])

    def schedule_cron(self, now: datetime) -> None:
        from croniter import croniter

        for flow in self.store.list_flows():
            if not flow["schedule"] or flow["paused"]:
                continue
            # Catch-up starts from the newest scheduled interval; a new flow starts now-ish.
            base = self.store.last_logical_date(flow["name"]) or as_utc(flow["updated_at"])
            due = croniter(flow["schedule"], base).get_next(datetime)
            if due > now:
                continue
            spec = self.spec(flow["name"], flow["version"])
            from ..spec import resolve_params

            try:
                params = resolve_params(spec, {})
            except Exception as exc:
                log.error("flow %s: cannot schedule a run: %s", flow["name"], exc)
                continue
            run_id = self.store.create_run(spec, params, actor=self.actor, trigger="schedule",
                                           logical_date=due, reason=f"cron {flow['schedule']}")
            if run_id:
                log.info("flow %s: scheduled run %s for %s", flow["name"], run_id, due.isoformat())
                self.evaluate(run_id)

    # -- the state machine ----------------------------------------------------------------
    def spec(self, flow: str, version: str, tx: Any = None) -> FlowSpec:
        """A pinned flow version (cached; read through ``tx`` when inside one)."""
        key = (flow, version)
        if key not in self._specs:
            self._specs[key] = (tx or self.store).flow_spec(flow, version)
        return self._specs[key]

    def _chosen(self, run_id: str, step: str) -> list[str]:
        return self._branch_choices.get((run_id, step), [])

    def evaluate_safely(self, run_id: str) -> None:
        """One broken run (say, a spec that no longer loads) must not stall the others."""
        try:
            self.evaluate(run_id)
        except Exception:
            log.exception("run %s: evaluation failed; retried at the next event or sweep", run_id)

    def evaluate(self, run_id: str) -> None:
        """Move one run forward: finish steps, start retries, dispatch what became ready.

        One transaction reads the run and writes every transition (a round trip saved per
        completion); the new attempts are published after it commits.
        """
        self.stats["evaluations"] += 1
        to_send: list[Dispatch] = []
        with self.store.tx(self.actor, self.clock()) as tx:
            finished = self._advance(tx, run_id, to_send)
        if finished:
            for key in [k for k in self._branch_choices if k[0] == run_id]:
                del self._branch_choices[key]
        self._send(to_send)

    def _advance(self, tx: Any, run_id: str, to_send: list[Dispatch]) -> bool:
        """The state machine for one run inside ``tx``; returns whether the run has ended."""
        run, step_rows, attempt_rows = tx.snapshot(run_id)
        if RunState(run["state"]) not in _ACTIVE_RUN:
            return True
        spec = self.spec(run["flow_name"], run["version"], tx)
        state = {r["step"]: StepState(r["state"]) for r in step_rows}
        rows = {r["step"]: r for r in step_rows}
        latest: dict[str, dict[str, Any]] = {}
        for a in attempt_rows:
            if a["step"] not in latest or a["number"] > latest[a["step"]]["number"]:
                latest[a["step"]] = a
        branches = [s.name for s in spec.steps if s.kind == "branch" and (
            state[s.name] == StepState.SUCCESS
            or latest.get(s.name, {}).get("state") == AttemptState.SUCCESS.value)]
        missing = [b for b in branches if (run_id, b) not in self._branch_choices]
        if missing:
            for b, value in tx.results(run_id, missing).items():
                self._branch_choices[(run_id, b)] = [value] if isinstance(value, str) else list(value or [])
        now = tx.now
        if run["state"] == RunState.QUEUED.value:
            tx.cas_run(run_id, [RunState.QUEUED], RunState.RUNNING, started_at=tx.now)
        # 1. steps whose latest attempt finished (the claim made the step running)
        for name in spec.step_names:
            if name not in latest:
                continue
            a = latest[name]
            if state[name] != StepState.RUNNING or not AttemptState(a["state"]).terminal:
                continue
            step = spec.step(name)
            if a["state"] == AttemptState.SUCCESS.value:
                new, extra = StepState.SUCCESS, {"ended_at": a["ended_at"]}
                reason = f"attempt {a['number']} succeeded"
            elif a["state"] == AttemptState.SKIPPED.value:
                new, extra = StepState.SKIPPED, {"ended_at": a["ended_at"]}
                reason = a["error"] or "skipped by the step"
            elif a["number"] < step.retry.max_attempts:
                delay = a["retry_delay"] if a["retry_delay"] is not None else \
                    step.retry.delay_after(a["number"])
                new, extra = StepState.UP_FOR_RETRY, {"next_attempt_at": tx.now + timedelta(seconds=delay)}
                reason = (f"attempt {a['number']} of {step.retry.max_attempts} failed; "
                          f"retrying in {delay:.1f} s: {a['error']}")
            else:
                new, extra = StepState.FAILED, {"ended_at": a["ended_at"]}
                reason = (f"attempt {a['number']} of {step.retry.max_attempts} failed: "
                          f"{a['error']}")
            if tx.cas_step(run_id, name, [StepState.RUNNING], new, reason=reason, **extra):
                state[name] = new
                if new == StepState.UP_FOR_RETRY:
                    rows[name]["next_attempt_at"] = extra["next_attempt_at"]
        # 2. retries whose timer is due
        for name in spec.step_names:
            if state[name] != StepState.UP_FOR_RETRY:
                continue
            due = as_utc(rows[name]["next_attempt_at"])
            if due is None or due > now:
                self._note_timer(due)
                continue
            number = (latest[name]["number"] if name in latest else 0) + 1
            if self._start_attempt(tx, run_id, spec, name, StepState.UP_FOR_RETRY, number, to_send):
                state[name] = StepState.QUEUED
        # 3. pending steps, in dependency order so skips and failures propagate at once
        for name in spec.order:
            if state[name] != StepState.PENDING:
                continue
            step = spec.step(name)
            ups = [state[u] for u in step.upstream]
            followed = [
                not (spec.step(u).kind == "branch" and state[u] == StepState.SUCCESS
                     and name not in self._chosen(run_id, u))
                for u in step.upstream
            ]
            decision = decide(step.trigger, ups, followed)
            if decision == Decision.WAIT:
                continue
            if decision == Decision.RUN:
                if self._start_attempt(tx, run_id, spec, name, StepState.PENDING, 1, to_send):
                    state[name] = StepState.QUEUED
                continue
            new = StepState.SKIPPED if decision == Decision.SKIP else StepState.UPSTREAM_FAILED
            why = ("not chosen by its branch or an upstream was skipped"
                   if new == StepState.SKIPPED else "an upstream step failed")
            if tx.cas_step(run_id, name, [StepState.PENDING], new, reason=why, ended_at=tx.now):
                state[name] = new
        # 4. the run ends when every step has
        if all(s.terminal for s in state.values()):
            ok = all(s in (StepState.SUCCESS, StepState.SKIPPED) for s in state.values())
            final = RunState.SUCCESS if ok else RunState.FAILED
            bad = sorted(n for n, s in state.items() if s == StepState.FAILED)
            tx.cas_run(run_id, [RunState.RUNNING], final, ended_at=tx.now,
                       reason="all steps done" if ok else f"failed steps: {', '.join(bad)}")
        return all(s.terminal for s in state.values())

    def _start_attempt(self, tx: Any, run_id: str, spec: FlowSpec, name: str, old: StepState,
                       number: int, to_send: list[Dispatch]) -> bool:
        step = spec.step(name)
        queue = step.queue or "default"
        if not self.dispatcher.can_dispatch(queue):
            return False  # stays pending; the next event or sweep tries again
        if not tx.cas_step(run_id, name, [old], StepState.QUEUED, attempts=number,
                           reason=f"attempt {number} dispatched", next_attempt_at=None):
            return False
        task_id = tx.insert_attempt(run_id, name, number)
        to_send.append(Dispatch(run_id, spec.name, step, number, task_id))
        return True

    def _send(self, items: list[Dispatch]) -> None:
        for item in items:
            try:
                self.dispatcher.dispatch(item)
                self.stats["dispatched"] += 1
            except DispatchError as exc:
                log.error("%s", exc)

    def _note_timer(self, due: datetime | None) -> None:
        if due is not None and (self._next_timer is None or due < self._next_timer):
            self._next_timer = due
