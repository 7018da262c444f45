"""The scheduler: starts runs, grants waiting steps their slots, and owns timers and sweeps.

Not public API. It never runs user code and never rescans every run
(docs/design-notes.md#event-driven-readiness). Readiness lives in SQL counters that the
transaction ending a step updates, so workers move the happy path forward themselves (a
finished step queues its ready downstream steps: a chain hop skips this process). The
scheduler is the authority for everything else:

* runs: queued -> running within each flow's ``max_active_runs``, oldest first;
* the slot ledger: a step that needs a slot (global cap, pool, lock, flow step cap) waits in
  state ``scheduled``; the scheduler grants waiters in priority order, runs taking turns;
* backpressure: nothing is published to a queue above its high watermark
  (docs/design-notes.md#backpressure);
* retry timers (``next_attempt_at`` in SQL, so a restart loses none:
  docs/design-notes.md#retry-timers-in-sql);
* sweeps: queued attempts whose message was lost, workers gone silent
  (docs/design-notes.md#dispatch-leases, #lost-workers), cron.

It wakes on events from workers and triggers, not by polling SQL in a tight loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from ..dispatch.base import Backpressure, Dispatch, Dispatcher
from ..errors import LeaseLost
from ..spec import FlowSpec, StepSpec
from ..states import RunState
from ..store.approvals import expire_approvals
from ..store.machine import Effects
from ..store.sql import SqlStore, utcnow

log = logging.getLogger(__name__)

#: While waiters are held back by backpressure or a full limit, look again this often even
#: with no event (a draining broker queue sends none).
WAITER_POLL_SECONDS = 0.2
#: How often a standby scheduler asks for the lease (the takeover delay after a crash).
STANDBY_POLL_SECONDS = 1.0
#: Waiters granted per transaction.
GRANT_BATCH = 500
#: Old queued attempts looked at per sweep for a message that went with a dead worker.
UNSTARTED_BATCH = 500
#: Between sweeps, pending trigger events are looked at on events at most this often.
TRIGGER_POLL_SECONDS = 0.5


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
        global_cap: int | None = None,
        backpressure: Backpressure | None = None,
        clock: Callable[[], datetime] = utcnow,
        name: str | None = None,
        on_sweep: Callable[[], None] | None = None,
        lease: Any = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.events = events
        self.sweep_seconds = sweep_seconds
        self.queued_lease = timedelta(seconds=queued_lease_seconds)
        # A running attempt whose heartbeat is this old lost its worker: publish it again
        # (the next worker takes it over; a late redelivery of the old message is dropped).
        self.lost_after = timedelta(seconds=lost_after_seconds)
        self.global_cap = global_cap or None
        self.backpressure = backpressure
        self.clock = clock
        self.actor = name or f"scheduler@{socket.gethostname()}:{os.getpid()}"
        self.on_sweep = on_sweep
        #: Who is active (see .lease); None: this scheduler is always active (dev, tests).
        self.lease = lease
        self._specs: dict[tuple[str, str], FlowSpec] = {}
        #: The deadline check's memory of each run it watches (flowkit.sla.watch.DeadlineWatch).
        self._deadline_watch: Any = None
        self._next_sweep: datetime | None = None
        self._next_timer: datetime | None = None
        #: The next cron tick of any scheduled flow: the loop wakes for it, so a due run is
        #: created at its time, not at the next sweep (up to ``sweep_seconds`` late).
        self._next_cron: datetime | None = None
        self._grant_due: float | None = 0.0  # monotonic time to look at waiters again
        self._unsent: list[Dispatch] = []
        self._standby_beat = float("-inf")  # monotonic time of the last standby heartbeat
        self._trigger_check_at = 0.0  # monotonic time to look at pending trigger events again
        self._triggers_more = False  # a backlog of trigger events is being taken in slices
        #: ``sweeps`` counts finished sweeps and ``sweep_started_at`` is when the last one began;
        #: both are stored with each heartbeat (written as a sweep ends), so a test or an
        #: operator can wait for a sweep that began after a given moment.
        self.stats: dict[str, Any] = {
            "events": 0,
            "dispatched": 0,
            "granted_batches": 0,
            "loops": 0,
            "last_loop_at": None,
            "sweeps": 0,
            "sweep_started_at": None,
        }

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Rebuild from SQL: old events are dropped, queued runs start, waiters are granted."""
        dropped = self.events.purge()
        log.info("scheduler %s: starting; dropped %s stale events, rebuilding from SQL", self.actor, dropped)
        self.store.set_global_cap(self.global_cap)
        # First what a crashed predecessor queued but may not have published (before this
        # scheduler queues anything itself, so nothing it publishes now goes out twice).
        self.resend_expired(self.clock(), everything=True)
        self.reconcile_runs()
        self._apply(self.store.start_runs(self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate))
        self._grant_due = 0.0
        self.sweep()
        self.store.beat_scheduler(self.actor, self.status(), started=True)

    def run_forever(self, stop: threading.Event) -> None:
        """Loop until ``stop``; a failing database or broker is retried, never fatal.

        With a lease, only the holder acts; the others stand by and take over when it goes.
        A scheduler that finds its lease gone (it froze, or lost the database for longer than
        the lease) stops acting at once: its writes would be refused anyway.
        """
        self.register()
        backoff = 0.5
        started = False
        standby_logged = False
        while not stop.is_set():
            try:
                if self.lease is not None and not self.lease.held():
                    if started:
                        self._stand_down(
                            getattr(self.lease, "lost_reason", "") or "its lease ran out before it could renew it"
                        )
                        started = False
                    if not self.lease.acquire():
                        if not standby_logged:
                            log.info("scheduler %s: standing by (another scheduler is active)", self.actor)
                            standby_logged = True
                        self._beat_standby()
                        stop.wait(STANDBY_POLL_SECONDS)
                        continue
                    log.warning(
                        "scheduler %s: active (holds the scheduler lease)%s",
                        self.actor,
                        f", fencing token {self.lease.token}" if getattr(self.lease, "token", None) else "",
                    )
                    standby_logged = False
                if not started:
                    self.start()
                    started = True
                # Bounded waits keep a stop request (SIGTERM) answered within a second.
                self.step_once(max_wait=1.0)
                backoff = 0.5
            except LeaseLost as exc:
                self._stand_down(getattr(self.lease, "lost_reason", "") or str(exc))
                started = standby_logged = False
            except Exception as exc:
                log.error(
                    "scheduler %s: loop error (%s: %s); retrying in %.1f s",
                    self.actor,
                    type(exc).__name__,
                    " ".join(str(exc).split())[:300],
                    backoff,
                )
                log.debug("scheduler %s: loop error", self.actor, exc_info=True)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        self._stopped()

    def register(self) -> None:
        """Record this scheduler and the settings it runs with (`flowkit status` shows these,
        not the settings of the shell it runs in)."""
        bp = self.backpressure
        config = {
            "queue_high_watermark": bp.high if bp else 0,
            "queue_low_watermark": bp.low if bp else 0,
            "max_in_flight": self.global_cap or 0,
            "sweep_seconds": self.sweep_seconds,
            **(self.lease.describe() if self.lease is not None else {}),
        }
        try:
            self.store.register_scheduler(self.actor, config)
        except Exception as exc:  # informative only; the loop retries the database itself
            log.warning("scheduler %s: could not record its start: %s", self.actor, exc)

    def _stand_down(self, why: str) -> None:
        """No longer active: publish nothing more. What was queued but not yet published is
        published by the active scheduler, which sends every queued attempt when it starts."""
        log.warning("scheduler %s: no longer active (%s); standing by, writing nothing", self.actor, why)
        self._unsent = []
        self._standby_beat = float("-inf")
        self._beat_standby()

    def _stopped(self) -> None:
        if self.lease is not None:
            self.lease.release()  # a standby takes over at once, not after a timeout
        try:
            self.store.mark_scheduler_stopped(self.actor)
        except Exception as exc:  # status then shows it as not responding
            log.warning("scheduler %s: could not record its stop: %s", self.actor, " ".join(str(exc).split())[:200])

    def _beat_standby(self) -> None:
        now = time.monotonic()
        if now - self._standby_beat >= self.sweep_seconds:
            self._standby_beat = now
            try:
                self.store.beat_scheduler(self.actor, {"role": "standby"})
            except Exception as exc:  # informative only
                log.debug("scheduler %s: standby heartbeat failed: %s", self.actor, exc)

    def step_once(self, max_wait: float | None = None) -> None:
        wait = self._wait_seconds(max_wait)
        batch = self.events.wait(wait)
        self.handle(batch)
        now = self.clock()
        if self._next_timer is not None and now >= self._next_timer:
            self._next_timer = None
            self._apply(
                self.store.start_due_retries(
                    self.actor, now, specs=self._specs, global_cap=self.global_cap, gate=self._gate
                )
            )
            self._apply(
                expire_approvals(self.store, now, specs=self._specs, global_cap=self.global_cap, gate=self._gate)
            )
            self._next_timer = self.store.next_retry_at()
        if self._next_cron is not None and now >= self._next_cron:
            self._next_cron = None
            self.schedule_cron(now)
        self.grant()
        if (batch or self._triggers_more) and time.monotonic() >= self._trigger_check_at:
            self.consume_triggers()  # a run ended or a dataset was written, perhaps
        if self._next_sweep is None or now >= self._next_sweep:
            self.sweep()
        self.stats["loops"] += 1
        self.stats["last_loop_at"] = now.isoformat()

    def _wait_seconds(self, max_wait: float | None) -> float:
        now = self.clock()
        wait = self.sweep_seconds
        for due in (self._next_sweep, self._next_timer, self._next_cron):
            if due is not None:
                wait = min(wait, max((due - now).total_seconds(), 0.0))
        if self._grant_due is not None:
            wait = min(wait, max(self._grant_due - time.monotonic(), 0.0))
        if self._unsent:
            wait = min(wait, 1.0)
        if self._triggers_more:
            wait = 0.0
        return wait if max_wait is None else min(wait, max_wait)

    # -- events ---------------------------------------------------------------------------
    def handle(self, batch: list[dict[str, Any]]) -> None:
        """Work on a batch of events: new runs start; anything else means "look at waiters"."""
        self.stats["events"] += len(batch)
        new_runs = [e["run_id"] for e in batch if e.get("type") == "run_created" and e.get("run_id")]
        woken = any(e.get("type") != "run_created" for e in batch)
        for e in batch:
            if e.get("timer"):  # a retry timer a worker set
                self._note_timer(datetime.fromisoformat(e["timer"]))
        if getattr(self.events, "reconnected", False):
            # The broker came back: messages queued before it went away may be gone with it.
            self.events.reconnected = False
            log.warning("scheduler %s: broker connection restored; publishing queued attempts again", self.actor)
            self.resend_expired(self.clock(), everything=True)
        if new_runs or woken:
            # A run that ended may let a queued run of its flow start (max_active_runs).
            self._apply(
                self.store.start_runs(
                    self.actor,
                    specs=self._specs,
                    global_cap=self.global_cap,
                    gate=self._gate,
                    run_ids=None if woken else new_runs,
                )
            )
        if woken:
            self._grant_due = 0.0
            self.advance_backfills(self.clock())  # a run that ended frees a place in its backfill's lane

    def _gate(self, step: StepSpec) -> bool:
        """May the scheduler queue this limit-free step at once (backpressure allowing)?"""
        return self.backpressure is None or self.backpressure.allow(self._queue(step))

    def _queue(self, step: StepSpec) -> str:
        return getattr(self.dispatcher, "queue_name", lambda q: q or "default")(step.queue)

    def grant(self) -> None:
        """Grant waiting steps while there is room; look again soon if some are held back."""
        if self._grant_due is None or time.monotonic() < self._grant_due:
            return
        self._grant_due = None
        while True:
            effects, full = self.store.grant_waiters(
                self.actor, specs=self._specs, global_cap=self.global_cap, allow=self._gate, batch=GRANT_BATCH
            )
            self.stats["granted_batches"] += 1
            self._apply(effects)
            if not full:
                break
        if self.store.waiting_count():
            self._grant_due = time.monotonic() + WAITER_POLL_SECONDS

    def _note_timer(self, due: datetime | None) -> None:
        if due is not None and (self._next_timer is None or due < self._next_timer):
            self._next_timer = due

    def _apply(self, effects: Effects) -> None:
        self._note_timer(effects.next_timer)
        if effects.wake:
            self._grant_due = 0.0
        for run_id in effects.ended_runs:
            log.info("run %s: ended", run_id)
        self._send(effects.to_send)
        if effects.callbacks:
            from ..dispatch.callbacks import publish

            self._still_active(len(effects.callbacks))
            publish(self.dispatcher, effects.callbacks)

    def _still_active(self, publishes: int) -> None:
        """Refuse to publish what a transaction committed if the lease is gone since: frozen
        past the lease after the commit, a standby may have taken over and published it
        already; the active scheduler publishes every queued attempt (and callbacks due) in
        any case."""
        if self.lease is not None and not self.lease.held():
            raise LeaseLost(
                f"scheduler {self.actor}: lease not held; {publishes} publish(es) dropped "
                "for the active scheduler to send"
            )

    def _send(self, items: list[Dispatch]) -> None:
        items = self._unsent + items
        self._unsent = []
        if not items:
            return
        self._still_active(len(items))
        failed = self.dispatcher.dispatch_many(items)
        self.stats["dispatched"] += len(items) - len(failed)
        # Kept in SQL as queued either way; retried every loop until the broker takes them.
        self._unsent = failed

    # -- sweep ----------------------------------------------------------------------------
    def sweep(self, force_leases: bool = False) -> None:
        """Safety net: due timers, stuck runs, expired leases, silent workers, cron."""
        now = self.clock()
        started_at = utcnow()  # the wall clock, as readers compare it with theirs (not a FakeClock)
        self._next_sweep = now + timedelta(seconds=self.sweep_seconds)
        if self.on_sweep:
            try:
                self.on_sweep()
            except Exception:
                log.exception("scheduler %s: sweep hook failed", self.actor)
        self.schedule_cron(now)
        self.advance_backfills(now)
        self.consume_triggers()
        self._apply(self.store.start_runs(self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate))
        self._apply(
            self.store.start_due_retries(
                self.actor, now, specs=self._specs, global_cap=self.global_cap, gate=self._gate
            )
        )
        self._apply(expire_approvals(self.store, now, specs=self._specs, global_cap=self.global_cap, gate=self._gate))
        self.reconcile_runs()
        self.check_deadlines(now)
        self.redispatch_silent(now)
        self.resend_expired(now, everything=force_leases)
        self.resend_unstarted(now)
        from ..dispatch.callbacks import resend_due

        resend_due(
            self.store,
            self.dispatcher,
            self.actor,
            now - (timedelta(seconds=self.sweep_seconds) if force_leases else self.queued_lease),
        )
        self._next_timer = self.store.next_retry_at()
        self._grant_due = 0.0
        self.stats["sweeps"] += 1
        self.stats["sweep_started_at"] = started_at.isoformat()
        try:
            self.store.beat_scheduler(self.actor, self.status())
        except Exception as exc:  # status is informative; the loop goes on
            log.warning("scheduler %s: could not record its heartbeat: %s", self.actor, exc)

    def reconcile_runs(self) -> None:
        """Decide what runs left undecided: stuck ones are recounted from their step states;
        ones only marked by a worker's finish (``runs.followups``) keep their counters, which
        live finishes go on bumping."""
        stuck = self.store.runs_needing_attention()
        marked = [r for r in self.store.runs_with_followups() if r not in stuck]
        for run_id in stuck + marked:
            try:
                self._apply(
                    self.store.reconcile_run(
                        self.actor,
                        run_id,
                        specs=self._specs,
                        global_cap=self.global_cap,
                        gate=self._gate,
                        recount_counters=run_id in stuck,
                    )
                )
            except DBAPIError as exc:  # a deadlock with a worker's finish: the next sweep retries
                log.warning(
                    "run %s: reconcile failed (%s); retried at the next sweep",
                    run_id,
                    " ".join(str(exc.orig).split())[:200],
                )

    def status(self) -> dict[str, Any]:
        out = dict(self.stats)
        out["role"] = "active"
        out["global_cap"] = self.global_cap
        out["backpressure"] = self.backpressure.snapshot() if self.backpressure else {}
        out["unsent"] = len(self._unsent)
        return out

    def resend_expired(self, now: datetime, everything: bool = False) -> None:
        """Publish again attempts that were queued but never started (docs/design-notes.md#dispatch-leases).

        On start or a broker reconnect (``everything``) this covers a crash between the SQL
        write and the publish, or messages lost with the broker; the worker skips a
        duplicate whose attempt already started or finished.
        """
        cutoff = now if everything else now - self.queued_lease
        # An interrupted attempt's message may have been acknowledged by the stopping worker:
        # do not make it wait out the whole lease.
        interrupted = now - timedelta(seconds=self.sweep_seconds)
        self._resend(
            self.store.expired_leases(cutoff, interrupted_before=interrupted),
            "queued attempt not started; published again",
        )
        # A worker's finish queued these and the worker never confirmed publishing them: it
        # died or froze between its commit and its publish. Waiting out the whole lease
        # would strand a fan-out for minutes; a live worker confirms within a heartbeat.
        unconfirmed = self.store.unconfirmed_publishes(now - self.lost_after)
        if unconfirmed:
            log.warning(
                "scheduler %s: %s attempt(s) queued by a worker that went silent before "
                "confirming their publish (first: run %s step %s); publishing them again",
                self.actor,
                len(unconfirmed),
                unconfirmed[0]["run_id"],
                unconfirmed[0]["step"],
            )
            self._resend(unconfirmed, "queued by a worker that went silent before publishing it; published again")

    def resend_unstarted(self, now: datetime) -> None:
        """Publish again attempts queued for three heartbeats, never started, whose queue is
        empty: their message left the queue for a worker that died before claiming it.

        With prefetch 1 a live worker hands a message to a free process at once, so one
        still unclaimed after that long went with its worker; on Redis it would come back
        only after the visibility timeout (an hour). A deep queue may legitimately hold an
        old message, so only empty queues are looked at; the lease covers the rest. A
        duplicate is harmless: the claim of an attempt already started drops it."""
        old = self.store.expired_leases(now - self.lost_after, limit=UNSTARTED_BATCH)
        if not old:
            return
        empty: dict[str, bool] = {}
        runs: dict[str, dict[str, Any]] = {}  # a backlog is mostly a few big runs
        unstarted = []
        for a in old:
            run = runs.get(a["run_id"])
            if run is None:
                run = runs[a["run_id"]] = self.store.get_run(a["run_id"])
            queue = self._queue(self.spec(run["flow_name"], run["version"]).step(a["step"]))
            if queue not in empty:
                try:
                    empty[queue] = self.dispatcher.queue_depth(queue) == 0
                except Exception as exc:  # the lease still covers it
                    log.warning("scheduler %s: cannot read the depth of queue %s: %s", self.actor, queue, exc)
                    empty[queue] = False
            if empty[queue]:
                unstarted.append(a)
        if unstarted:
            log.warning(
                "scheduler %s: %s attempt(s) queued for over %.0f s and never started while "
                "their queue is empty (first: run %s step %s); publishing them again",
                self.actor,
                len(unstarted),
                self.lost_after.total_seconds(),
                unstarted[0]["run_id"],
                unstarted[0]["step"],
            )
            self._resend(
                unstarted, "never started; its message went with a worker that died before claiming it; published again"
            )

    def redispatch_silent(self, now: datetime) -> None:
        """Publish again attempts whose worker stopped beating (docs/design-notes.md#lost-workers):
        the next worker to get the message takes the attempt over (its heartbeat is stale); a
        late redelivery of the old message finds it taken and is dropped. Redelivery caps catch
        a poison step (docs/design-notes.md#redelivery-cap)."""
        silent = self.store.silent_attempts(now - self.lost_after, dispatched_before=now - self.lost_after)
        for a in silent:
            log.warning(
                "run %s step %s: attempt %s: worker %s silent since %s; publishing it again",
                a["run_id"],
                a["step"],
                a["number"],
                a["worker"],
                a["heartbeat_at"].isoformat() if a["heartbeat_at"] else "-",
            )
        self._resend(silent, "worker silent (no heartbeat); published again for another worker", states=("running",))

    def _resend(self, attempts: list[dict[str, Any]], reason: str, states: tuple[str, ...] = ("queued",)) -> None:
        """Publish these live attempts again (same task id), within backpressure: what the
        queue cannot take now stays queued in SQL and is tried at the next sweep."""
        items = []
        for a in attempts:
            run = self.store.get_run(a["run_id"])
            if RunState(run["state"]).terminal:
                continue
            spec = self.spec(run["flow_name"], run["version"])
            if not self._gate(spec.step(a["step"])):
                continue
            with self.store.tx(self.actor, self.clock()) as tx:
                if not tx.touch_attempt_dispatch(a["run_id"], a["step"], a["number"], states=states):
                    continue
                tx.event("lease_expired", run_id=a["run_id"], step=a["step"], attempt=a["number"], reason=reason)
            items.append(Dispatch(a["run_id"], spec.name, spec.step(a["step"]), a["number"], a["task_id"]))
        self._send(items)

    def schedule_cron(self, now: datetime) -> None:
        from ..schedules.options import ScheduleOptions
        from ..schedules.planner import due_intervals
        from ..store.overlap_ops import last_planned

        for flow in self.store.list_flows():
            if not flow["schedule"] or flow["paused"]:
                continue
            spec = self.spec(flow["name"], flow["version"])
            # Which intervals are due: catch-up, first interval, bounds (flowkit/schedules/planner.py).
            last = last_planned(self.store, flow["name"])  # a run's, or an overlap skip's
            try:
                opts = ScheduleOptions.from_dict(flow["schedule"], spec.schedule_options)
                due = due_intervals(opts, now=now, last_logical=last)
            except (TypeError, ValueError, KeyError) as exc:  # one flow's bad options never stop the others
                log.error("flow %s: cannot plan its schedule: %s", flow["name"], exc)
                continue
            for interval in due:
                if self._overlap_allows(spec, interval):
                    self._create_scheduled(spec, flow["schedule"], interval.end)
            self._note_cron(next(opts.timetable().ticks_after(now)))

    def _note_cron(self, due: datetime) -> None:
        if self._next_cron is None or due < self._next_cron:
            self._next_cron = due

    def _overlap_allows(self, spec: FlowSpec, interval: Any) -> bool:
        """Apply the flow's overlap= policy to a due interval: False if it is skipped; a
        cancel_other cancels the going runs first (the operator's cancel path); a buffered
        run is created and held by the run-start rule (store/run_lanes.py)."""
        from ..errors import ActionRefused
        from ..schedules.overlap import overlap_policy
        from ..schedules.planner import OverlapAction, overlap_action
        from ..store.operator_ops import notify
        from ..store.overlap_ops import record_skip, scheduled_activity

        policy = overlap_policy(spec)
        now = scheduled_activity(self.store, spec.name)
        action = overlap_action(policy, previous_active=bool(now.going), buffered=now.queued)
        if action is OverlapAction.SKIP:
            why = f"overlap={policy}: run {now.going[0]} of the previous interval is still going"
            if record_skip(self.store, self.actor, spec.name, interval, why):
                log.info("flow %s: interval ending %s skipped (%s)", spec.name, interval.end.isoformat(), why)
            return False
        if action is OverlapAction.CANCEL_OTHER:
            for run_id in now.going:
                try:
                    result = self.store.cancel_run(
                        run_id,
                        by=self.actor,
                        reason=f"overlap=cancel_other: interval ending {interval.end.isoformat()} is due",
                    )
                except ActionRefused:  # it ended meanwhile
                    continue
                notify(result, dispatcher=self.dispatcher)
        return True

    def _create_scheduled(self, spec: FlowSpec, cron: str, due: datetime) -> None:
        from ..spec import resolve_params

        try:
            params = resolve_params(spec, {})
        except Exception as exc:
            log.error("flow %s: cannot schedule a run: %s", spec.name, exc)
            return
        run_id = self.store.create_run(
            spec, params, actor=self.actor, trigger="schedule", logical_date=due, reason=f"cron {cron}"
        )
        if run_id:
            log.info("flow %s: scheduled run %s for %s", spec.name, run_id, due.isoformat())
            self._apply(
                self.store.start_runs(
                    self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate, run_ids=[run_id]
                )
            )

    def consume_triggers(self) -> None:
        """Start the runs that pending flow and dataset trigger events call for, each event
        consumed once, in its run's transaction (flowkit/store/trigger_ops.py)."""
        try:
            created, more = self.store.consume_triggers(self.actor)
        except DBAPIError as exc:  # the events stay pending: the next look retries
            log.warning(
                "scheduler %s: consuming trigger events failed: %s", self.actor, " ".join(str(exc).split())[:200]
            )
            return
        # a backlog is taken in slices, between which the loop handles its events
        self._trigger_check_at = 0.0 if more else time.monotonic() + TRIGGER_POLL_SECONDS
        self._triggers_more = more
        if created:
            log.info("scheduler %s: %s triggered run(s) created", self.actor, len(created))
            self._apply(
                self.store.start_runs(
                    self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate, run_ids=created
                )
            )

    def advance_backfills(self, now: datetime) -> None:
        """Create the next runs of running backfills within their caps, and start them
        (flowkit/store/backfill_ops.py: bounded work per backfill per call)."""
        from ..store.backfill_ops import advance_backfills

        try:
            done = advance_backfills(self.store, self.actor, now)
        except Exception:  # a backfill never stops the loop: the next sweep tries again
            log.exception("scheduler %s: backfill advance failed", self.actor)
            return
        if done.created:
            self._apply(
                self.store.start_runs(
                    self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate, run_ids=done.created
                )
            )
        if done.rerun:
            self._grant_due = 0.0

    def check_deadlines(self, now: datetime) -> None:
        """Raise sla_at_risk / sla_missed on the scheduler's clock (flowkit.sla.watch)."""
        from ..sla.watch import DeadlineWatch

        if self._deadline_watch is None:
            self._deadline_watch = DeadlineWatch()
        try:
            self._deadline_watch.check(self.store, self.actor, now, self.spec)
        except Exception:  # deadlines are advisory: the sweep goes on
            log.exception("scheduler %s: deadline check failed", self.actor)

    def spec(self, flow: str, version: str) -> FlowSpec:
        """A pinned flow version (cached)."""
        key = (flow, version)
        if key not in self._specs:
            self._specs[key] = self.store.flow_spec(flow, version)
        return self._specs[key]

    # -- used by tests and the inline harness ----------------------------------------------
    def start_run(self, run_id: str) -> None:
        self._apply(
            self.store.start_runs(
                self.actor, specs=self._specs, global_cap=self.global_cap, gate=self._gate, run_ids=[run_id]
            )
        )
        self._grant_due = 0.0
        self.grant()

    def evaluate(self, run_id: str) -> None:
        """Bring one run up to date from SQL (start it, decide its steps, grant waiters)."""
        run = self.store.get_run(run_id)
        if run["state"] == RunState.QUEUED.value:
            self.start_run(run_id)
            return
        self._apply(
            self.store.reconcile_run(self.actor, run_id, specs=self._specs, global_cap=self.global_cap, gate=self._gate)
        )
        self._grant_due = 0.0
        self.grant()
