"""Test helpers for flowkit users and flowkit's own tests: run flows in-process, no broker.

>>> harness = InlineHarness(store, dags_folder="dags")
>>> run_id = harness.trigger("orders", {"customer": 7})
>>> harness.run_until_done(run_id)
'success'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from .config import Settings
from .dispatch.base import Backpressure, Dispatch
from .dispatch.events import MemoryEvents
from .execution.attempt import run_attempt
from .execution.callbacks import run_callback
from .execution.runtime import WorkerRuntime
from .loading.sync import sync_dags
from .scheduler.loop import Scheduler
from .spec import resolve_params
from .store.machine import CallbackDue
from .store.operator_ops import ActionResult, notify
from .store.sql import SqlStore, utcnow


class InlineDispatcher:
    """Collects dispatches; the harness runs them on an in-process worker.

    ``depths`` stands in for the broker's queue depths (for backpressure tests).
    """

    def __init__(self) -> None:
        self.sent: list[Dispatch] = []
        self.callbacks: list[CallbackDue] = []
        self.depths: dict[str, int] = {}
        self.revoked: list[str] = []

    def queue_name(self, queue: str | None) -> str:
        return queue or "flowkit"

    def queue_for(self, item: Dispatch) -> str:
        return self.queue_name(item.step.queue)

    def queue_depth(self, queue: str) -> int:
        return self.depths.get(queue, 0) + sum(1 for d in self.sent if self.queue_for(d) == queue)

    def dispatch_many(self, items: Iterable[Dispatch]) -> list[Dispatch]:
        self.sent.extend(items)
        return []

    def dispatch_callbacks(self, items: Iterable[CallbackDue]) -> None:
        self.callbacks.extend(items)
    def revoke(self, task_ids: list[str]) -> None:
        """Drop the revoked attempts' messages, as a worker does with a revoked task id."""
        self.revoked += task_ids
        self.sent = [d for d in self.sent if d.task_id not in task_ids]


class FakeClock:
    """A clock the test moves by hand (retry timers become instant)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InlineHarness:
    """A scheduler and a worker in this thread, over a real SqlStore, with no broker."""

    def __init__(self, store: SqlStore, dags_folder: str, *, settings: Settings | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        base = settings or Settings(database_url=store.url)
        self.settings = replace(base, dags_folder=dags_folder)
        self.store = store
        self.events = MemoryEvents()
        self.dispatcher = InlineDispatcher()
        self.clock = clock or utcnow
        self.backpressure = (Backpressure(self.dispatcher.queue_depth, ttl_seconds=0.05,
                                          high=self.settings.queue_high_watermark,
                                          low=self.settings.queue_low_watermark)
                             if self.settings.queue_high_watermark else None)
        self.scheduler = Scheduler(store, self.dispatcher, self.events, clock=self.clock,
                                   sweep_seconds=3600, name="scheduler@test",
                                   global_cap=self.settings.max_in_flight or None,
                                   backpressure=self.backpressure)
        self.scheduler.store.set_global_cap(self.scheduler.global_cap)
        self.runtime = WorkerRuntime(settings=self.settings, store=store, events=self.events,
                                     name="worker@test", dispatcher=self.dispatcher,
                                     backpressure=self.backpressure)
        # Claim this process's identity now, so no heartbeat thread starts and the
        # worker keeps the name "worker@test" in the audit trail.
        self.runtime._hb_pid = os.getpid()
        sync_dags(store, dags_folder)

    def trigger(self, flow: str, params: dict[str, Any] | None = None) -> str:
        spec = self.store.flow_spec(flow)
        run_id = self.store.create_run(spec, resolve_params(spec, params or {}), actor="test")
        assert run_id is not None
        self.scheduler.start_run(run_id)
        return run_id

    def act(self, result: ActionResult) -> ActionResult:
        """Carry out what an operator's action left to do after its commit, as the CLI does:
        revoke the attempts it stopped, wake the scheduler (which grants what became ready).

        >>> harness.act(store.cancel_run(run_id, by="ann", reason="wrong input"))
        """
        notify(result, dispatcher=self.dispatcher, events=self.events)
        self.scheduler.handle(self.events.wait(0))
        self.scheduler.grant()
        return result

    def work(self) -> int:
        """Run every dispatched attempt (and callback) once and feed the completions back.
        Returns how many attempts ran."""
        ran = 0
        while self.dispatcher.sent or self.dispatcher.callbacks:
            if not self.dispatcher.sent:
                run_callback(self.runtime, self.dispatcher.callbacks.pop(0).id)
                continue
            item = self.dispatcher.sent.pop(0)
            run_attempt(self.runtime, item.run_id, item.step.name, item.attempt)
            ran += 1
            self.scheduler.handle(self.events.wait(0))
            self.scheduler.grant()
        return ran

    def run_until_done(self, run_id: str, *, advance: Callable[[float], None] | None = None,
                       max_rounds: int = 1000) -> str:
        """Work until the run ends; ``advance`` moves a FakeClock past retry timers."""
        for _ in range(max_rounds):
            self.work()
            state: str = self.store.get_run(run_id)["state"]
            if state in ("success", "failed", "cancelled"):
                return state
            due = self.store.next_retry_at()
            if due is not None and advance is not None:
                advance(max((due - self.clock()).total_seconds(), 0) + 0.001)
            self.scheduler.step_once(max_wait=0)
        raise AssertionError(f"run {run_id} did not finish in {max_rounds} rounds")
