"""A worker process's state: settings, store, the code and spec caches, heartbeats, and the
runtime Celery tasks find. Not public API.

The bottom of the worker side: :mod:`.attempt` and :mod:`.callbacks` use it; it uses the
store, the dispatchers and the loader, never a module above it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..config import Settings
from ..dispatch.base import Backpressure
from ..loading.loader import exec_module_source, flows_in
from ..spec import FlowSpec
from ..store.sql import SqlStore
from . import shell

log = logging.getLogger(__name__)

#: How long a worker trusts its reading of the global in-flight cap.
GLOBAL_CAP_CACHE_SECONDS = 5.0


@dataclass
class WorkerRuntime:
    """Per-process state of a worker: settings, store, code and spec caches, heartbeats."""

    settings: Settings
    store: SqlStore
    events: Any  # EventBus
    #: Publishes fast-followed attempts (None: never fast-follow, leave it to the scheduler).
    dispatcher: Any = None
    backpressure: Backpressure | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _global_cap: tuple[float, int | None] = (float("-inf"), None)
    _modules: dict[tuple[str, str], Any] = field(default_factory=dict)
    _specs: dict[tuple[str, str], FlowSpec] = field(default_factory=dict)
    _callables: dict[tuple[str, str, str], Callable[..., Any]] = field(default_factory=dict)
    _running: set[tuple[str, str, int]] = field(default_factory=set)
    #: Task ids this process published after its finishes queued them: the heartbeat
    #: confirms them to the store (one statement a beat, not one a publish).
    _published: list[str] = field(default_factory=list)
    _hb_thread: threading.Thread | None = None
    #: Attempts the last heartbeat found no longer this worker's.
    _lost_last_beat: set[tuple[str, str, int]] = field(default_factory=set)
    _hb_pid: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_identity(self) -> None:
        """A forked pool child is a new worker: its own name and heartbeat thread."""
        if self._hb_pid != os.getpid():
            self.name = f"{socket.gethostname()}:{os.getpid()}"
            self._running = set()
            self._published = []
            self._hb_pid = os.getpid()
            self._hb_thread = threading.Thread(target=self._beat, name="flowkit-heartbeat", daemon=True)
            self._hb_thread.start()

    def _beat(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.settings.heartbeat_seconds):
            with self._lock:
                keys = list(self._running)
            try:
                lost = self.store.heartbeat(keys, self.name)
                self.confirm_published()
            except Exception as exc:  # a missed beat is survivable; a dead thread is not
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)
                continue
            self._stop_lost(lost)

    def _stop_lost(self, lost: list[tuple[str, str, int]]) -> None:
        """Stop the shell commands of attempts that are no longer this worker's (cancelled,
        or taken over): on every pool, and even when the cancel's broadcast did not reach
        this process (a solo pool reads control messages only between steps).

        Only an attempt found lost by two beats in a row: one beat may race its own finish,
        and the cancel's broadcast, which answers the operator with what it stopped, should
        come first."""
        confirmed = [key for key in lost if key in self._lost_last_beat]
        self._lost_last_beat = set(lost)
        for key in confirmed:
            with self._lock:
                still_here = key in self._running  # not just finished meanwhile
            if still_here and shell.stop_for(key):
                log.warning(
                    "run %s step %s: attempt %s is no longer this worker's (cancelled or "
                    "taken over); its command's process group was stopped",
                    *key,
                )

    def published(self, task_ids: list[str]) -> None:
        """These attempts, queued by this process's finishes, went out to the broker."""
        with self._lock:
            self._published.extend(task_ids)
        if self._hb_thread is None:  # no heartbeat thread (tests, the inline harness)
            self.confirm_published()

    def confirm_published(self) -> None:
        """Tell the store what went out since the last beat (kept for the next if it fails)."""
        with self._lock:
            ids, self._published = self._published, []
        try:
            self.store.confirm_published(ids)
        except Exception:
            with self._lock:
                self._published = ids + self._published
            raise

    def global_cap(self) -> int | None:
        """The scheduler's global in-flight cap, as the ledger holds it (cached a few seconds):
        an attempt queued here must hold a slot of it, so only the scheduler queues then."""
        read_at, cap = self._global_cap
        if time.monotonic() - read_at > GLOBAL_CAP_CACHE_SECONDS:
            try:
                rows = {r["key"]: r["capacity"] for r in self.store.limits()}
                cap = rows.get("global") if "global" in rows else (self.settings.max_in_flight or None)
            except Exception as exc:  # keep the last value; the finish path reports store trouble
                log.warning("worker %s: cannot read the global cap: %s", self.name, exc)
            self._global_cap = (time.monotonic(), cap)
        return cap

    def fast_follow_gate(self) -> Callable[[Any], bool] | None:
        """Which ready downstream steps this worker may queue itself, for one finish: at most
        ``fast_follow_max``, and per queue no more than fit under the low watermark (each
        one consented to counts, whether it becomes ready or not)."""
        if self.dispatcher is None:
            return None
        budget = [self.settings.fast_follow_max]
        taken: dict[str, int] = {}
        bp = self.backpressure

        def gate(step: Any) -> bool:
            if budget[0] <= 0:
                return False
            queue = step.queue or self.settings.default_queue
            if bp is not None and not bp.allow_fast(queue, taken.get(queue, 0) + 1):
                return False
            budget[0] -= 1
            taken[queue] = taken.get(queue, 0) + 1
            return True

        return gate

    def spec(self, flow: str, version: str) -> FlowSpec:
        key = (flow, version)
        if key not in self._specs:
            self._specs[key] = self.store.flow_spec(flow, version)
        return self._specs[key]

    def flow_for(self, flow: str, version: str) -> Any:
        """The ``Flow`` object of ``flow`` from the module source ``version`` is pinned to."""
        key = (flow, version)
        module = self._modules.get(key)
        if module is None:
            path, source = self.store.flow_source(flow, version)
            module = exec_module_source(
                path, source, os.path.abspath(self.settings.dags_folder), modules=self.store.flow_modules(flow, version)
            )
            self._modules[key] = module
        for candidate in flows_in(module):
            if candidate.name == flow:
                return candidate
        raise LookupError(f'version {version} of its module defines no flow "{flow}"')

    def callable_for(self, flow: str, version: str, step: str) -> Callable[..., Any]:
        """The step function from the exact module source the run is pinned to
        (docs/design-notes.md#pinned-code-per-run; cached: looked up per step)."""
        fn = self._callables.get((flow, version, step))
        if fn is None:
            fn = self._callables[(flow, version, step)] = self.flow_for(flow, version).callable_for(step)
        return fn

    def success_check_for(self, flow: str, version: str, step: str) -> Callable[[Any], Any] | None:
        """The step's success_when= callable, from the pinned module source."""
        check: Callable[[Any], Any] | None = self.flow_for(flow, version).success_check_for(step)
        return check


_T = TypeVar("_T")


def until_stored(what: str, fn: Callable[[], _T], give_up_after: float | None = None) -> _T:
    """Call ``fn`` until the store answers: a database outage delays the outcome, never loses
    it (and a claim leaves its message unacknowledged meanwhile). One log line per retry."""
    from sqlalchemy.exc import DBAPIError

    from ..errors import StoreUnavailable

    delay, started = 0.25, None
    while True:
        try:
            return fn()
        except (StoreUnavailable, DBAPIError) as exc:
            started = time.monotonic() if started is None else started
            transient = (
                isinstance(exc, StoreUnavailable)
                or exc.connection_invalidated
                or type(exc).__name__ in ("OperationalError", "InterfaceError")
            )
            if not transient:
                raise
            if give_up_after is not None and time.monotonic() - started > give_up_after:
                raise
            log.warning(
                "%s: the database did not answer (%s); retrying in %.2g s",
                what,
                " ".join(str(getattr(exc, "orig", exc)).split())[:200],
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def set_runtime(rt: WorkerRuntime | None) -> None:
    """Use ``rt`` as this process's runtime (None: build one from settings on first use)."""
    global _runtime
    _runtime = rt


def runtime_for(app: Any) -> WorkerRuntime:
    """The process's runtime, built from FLOWKIT_* settings on first use."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from ..dispatch.celery import CeleryDispatcher
                from ..dispatch.events import BrokerEvents

                settings = getattr(app, "flowkit_settings", None) or Settings.from_env()
                dispatcher = CeleryDispatcher(app, settings)
                _runtime = WorkerRuntime(
                    settings=settings,
                    store=SqlStore(settings.database_url),
                    events=BrokerEvents(app, settings.events_queue),
                    dispatcher=dispatcher,
                    backpressure=Backpressure(
                        dispatcher.queue_depth,
                        high=settings.queue_high_watermark,
                        low=settings.queue_low_watermark,
                        ttl_seconds=0.25,
                    ),
                )
    return _runtime
