"""The machinery of ``flowkit dev``: one run, an embedded scheduler and worker, and a prompt
stop. Not public API; :mod:`flowkit.cli` prints and exits, this module starts and stops.

Three rules keep ``flowkit dev`` honest about the one run it was asked for:

* **It runs only the run it creates.** On its SQLite store it holds the scheduler lease (a
  second scheduler, or a second ``flowkit dev``, on the same file is refused), so a run
  created by a ``flowkit dev`` and still live there has no process behind it: the dev that
  made it was killed. :func:`close_leftover_runs` cancels those before the embedded scheduler
  starts, or that scheduler would pick them up and publish their steps again.
* **Ctrl-C and SIGTERM stop everything within a second** (:meth:`DevSession.interrupt`): the
  scheduler stops, the run is cancelled through the operators' cancel (one rule for ending
  live attempts, in :mod:`flowkit.store.operator_ops`), every shell step's process group is
  killed, and the worker is given a moment to stop.
* **It exits when the run ends.** A step body that ignores its timeout, or is blocked in C,
  cannot be stopped from outside its thread; its attempt is already recorded (failed or
  cancelled), so :meth:`DevSession.close` reports it and the CLI leaves it behind.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ActionRefused
from .execution import shell

log = logging.getLogger(__name__)

#: The ``trigger`` of runs that ``flowkit dev`` creates: how a later dev finds them.
DEV_TRIGGER = "dev"
#: Who ends runs in the audit trail when ``flowkit dev`` does.
DEV_ACTOR = "flowkit dev"
#: How long a stop waits for shell commands to exit on SIGTERM before SIGKILL.
SHELL_STOP_GRACE_SECONDS = 0.3
#: How long a stop waits for the embedded worker's threads; a step body still running after
#: that is left behind (its attempt already ended in the store).
WORKER_STOP_GRACE_SECONDS = 0.5
_LIVE_RUN_STATES = ("queued", "running", "paused")


def close_leftover_runs(store: Any) -> list[dict[str, Any]]:
    """Cancel the runs an earlier ``flowkit dev`` created and left live; returns them.

    Only call this while holding the store's scheduler lease (see :func:`hold_lease`):
    then no process is working on those runs any more.
    """
    left = [r for r in store.list_runs(limit=10_000, states=_LIVE_RUN_STATES) if r["trigger"] == DEV_TRIGGER]
    closed = []
    for run in left:
        try:
            store.cancel_run(run["id"], by=DEV_ACTOR, reason="left live by a flowkit dev that was killed; not resumed")
        except ActionRefused:  # it ended meanwhile
            continue
        closed.append(run)
    return closed


def hold_lease(store: Any) -> Any:
    """The SQLite store's scheduler lease, held until this process exits (None for another
    database: a shared store is not flowkit dev's to clean up). Raises ConfigError, in one
    line, when a scheduler or another ``flowkit dev`` runs on the same file."""
    if not store.is_sqlite:
        return None
    from .scheduler.lease import SqliteLease

    lease = SqliteLease(store, "flowkit dev")
    lease.acquire()
    return lease


@dataclass
class Stopped:
    """What :meth:`DevSession.interrupt` did."""

    #: The cancel's summary, or why the run was not cancelled (it had ended).
    run: str
    #: Shell step process groups killed.
    shells: int
    #: Whether every embedded thread stopped; if not, the process must not wait for them.
    clean: bool


class DevSession:
    """The embedded scheduler and worker (threads pool) of one ``flowkit dev`` run."""

    def __init__(self, app: Any, scheduler: Any, store: Any, run_id: str, queues: list[str]) -> None:
        self.app = app
        self.scheduler = scheduler
        self.store = store
        self.run_id = run_id
        self.queues = queues
        self.stop_scheduler = threading.Event()
        self._worker_thread: threading.Thread | None = None
        self._scheduler_thread: threading.Thread | None = None

    def start(self) -> None:
        from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
        from celery.utils.nodenames import anon_nodename

        setup_app_for_worker(self.app, "WARNING", None)
        worker = TestWorkController(
            app=self.app,
            concurrency=2,
            hostname=anon_nodename(),
            pool="threads",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=self.queues,
        )
        # Daemon threads: a step body that ignores its timeout never keeps the process alive.
        self._worker_thread = threading.Thread(target=worker.start, name="flowkit-dev-worker", daemon=True)
        self._worker_thread.start()
        worker.ensure_started()
        self._scheduler_thread = threading.Thread(
            target=self.scheduler.run_forever, args=(self.stop_scheduler,), daemon=True, name="flowkit-dev-scheduler"
        )
        self._scheduler_thread.start()

    def interrupt(self, signal_name: str) -> Stopped:
        """Stop at once (Ctrl-C, SIGTERM): no new attempt, the run cancelled with its live
        attempts, every shell command killed, the worker told to stop."""
        self.stop_scheduler.set()
        try:
            summary = self.store.cancel_run(
                self.run_id, by=DEV_ACTOR, reason=f"flowkit dev interrupted ({signal_name})"
            ).summary
        except ActionRefused as exc:  # it had just ended: nothing to cancel
            summary = str(exc)
        shells = shell.stop_all(SHELL_STOP_GRACE_SECONDS)
        return Stopped(run=summary, shells=shells, clean=self.close())

    def close(self) -> bool:
        """Stop the scheduler and the worker; True if every thread stopped in time, False if
        a step body is still running (the process should then exit without waiting)."""
        from celery.worker import state as worker_state

        self.stop_scheduler.set()
        worker_state.should_terminate = 0  # the worker's loop ends, then its pool
        ended = True
        if self._worker_thread is not None:
            # Its pool's shutdown waits for the step bodies; the interpreter's exit would
            # too (concurrent.futures joins its threads), hence the verdict.
            self._worker_thread.join(WORKER_STOP_GRACE_SECONDS)
            ended = not self._worker_thread.is_alive()
        if self._scheduler_thread is not None:
            # A daemon that never runs user code: it answers the stop within its bounded
            # wait, and may be left to the interpreter's exit if it has not yet.
            self._scheduler_thread.join(WORKER_STOP_GRACE_SECONDS)
        try:
            self.scheduler.events.close()
        except Exception as exc:  # closing is best effort: the process is about to exit
            log.debug("dev: closing the event bus failed: %s", exc)
        return ended
