"""Flow and step callbacks: ``on_success``, ``on_failure``, ``on_retry``. Not public API
(users pass callables to ``Flow(...)`` and ``.step(...)``; they receive a
:class:`~flowkit.context.CallbackContext`).

A callback is user code, so it runs on a worker, with the code the run is pinned to, and
off the dispatch path:

1. The transaction that records an outcome (a worker finishing an attempt, or the
   scheduler ending a step or a run) writes the callback to an outbox (table
   ``callbacks``) when the flow or step defines one (:meth:`Machine.callback`).
2. After that transaction commits, whoever ran it publishes one ``flowkit.callback`` task
   per row, after the attempts it queued: the next step's dispatch never waits for it.
3. A worker runs the callback and marks the row done with an audit event,
   ``callback_ran`` or ``callback_failed``. An exception in a callback is logged and
   recorded; it never changes the run's state.
4. The scheduler's sweep publishes again the rows not done within
   ``FLOWKIT_QUEUED_LEASE_SECONDS`` (a lost publish, a worker lost mid-callback).

Delivery is therefore at least once: a callback may run twice (a worker lost after the
callback returned but before it was marked done), so keep callbacks idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .context import CallbackContext
from .store import callback_ops
from .store.machine import CallbackDue

log = logging.getLogger(__name__)

CALLBACK_TASK = "flowkit.callback"


def publish(dispatcher: Any, items: Iterable[CallbackDue]) -> None:
    """Publish callbacks the caller's transaction wrote. A failure is only logged: the row
    stays in the outbox and the scheduler's sweep publishes it again."""
    items = list(items)
    if not items:
        return
    send = getattr(dispatcher, "dispatch_callbacks", None)
    if send is None:
        log.warning("callbacks: %s cannot publish callbacks; the scheduler's sweep will", dispatcher)
        return
    try:
        send(items)
    except Exception as exc:  # kombu raises many types; the outbox keeps the callback
        log.warning("callbacks: could not publish %s callback(s) (%s); the scheduler's sweep "
                    "publishes them again", len(items), exc)


def resend_due(store: Any, dispatcher: Any, actor: str, dispatched_before: datetime) -> int:
    """The sweep's part: publish again callbacks not done in time. Returns how many."""
    items = callback_ops.take_due(store, actor, dispatched_before)
    publish(dispatcher, items)
    return len(items)


def wait_for_callbacks(store: Any, run_id: str, timeout: float) -> int:
    """Wait until the run's callbacks are done (``flowkit dev`` before it exits); returns
    how many are still pending after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while (left := callback_ops.pending(store, run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_callback(rt: Any, callback_id: str) -> str:
    """Run one callback on a worker (``rt`` is its WorkerRuntime); returns what happened."""
    from . import secrets
    from .worker import _until_stored, describe_exception

    rt.refresh_identity()
    cb = _until_stored(f"callback {callback_id}: reading it",
                       lambda: callback_ops.load(rt.store, callback_id))
    if cb is None:
        log.warning("callback %s: not in the store; dropped", callback_id)
        return "unknown"
    run_id, step, kind, scope = cb["run_id"], cb["step"], cb["kind"], cb["scope"]
    if cb["done_at"] is not None:
        log.info("run %s: %s %s callback already done; not run again", run_id, scope, kind)
        return "done"
    error: str | None = None
    try:
        spec = rt.spec(cb["flow_name"], cb["version"])
        secrets.register_secret_params(spec, cb["params"])  # masked in this process's logs
        flow = rt.flow_for(cb["flow_name"], cb["version"])
        fn = flow.callback_for(kind, step if scope == "step" else None)
        if fn is None:
            raise LookupError(f"version {cb['version']} defines no {kind} callback on "
                              f"{'step ' + repr(step) if scope == 'step' else 'the flow'}")
        ctx = CallbackContext(
            flow=cb["flow_name"], run_id=run_id, step=step, kind=kind, state=cb["state"],
            attempt=cb["attempt"], error=cb["error"], params=cb["params"], version=cb["version"],
            log=logging.getLogger(f"flowkit.callback.{cb['flow_name']}"))
        fn(ctx)
    except Exception as exc:
        error = secrets.mask_stored(describe_exception(exc))  # what the worker stores goes masked
        log.exception("run %s step %s: %s %s callback failed (the run's state is unchanged): %s",
                      run_id, step or "-", scope, kind, error)
    _until_stored(f"run {run_id}: recording the {kind} callback",
                  lambda: callback_ops.finish(rt.store, cb, actor=rt.name, error=error))
    if error is None:
        log.info("run %s step %s: %s %s callback ran", run_id, step or "-", scope, kind)
    return "failed" if error else "ran"


def register(app: Any) -> None:
    """Register the ``flowkit.callback`` task on a Celery app."""
    from .worker import runtime_for

    @app.task(name=CALLBACK_TASK, bind=True, acks_late=True,  # type: ignore[untyped-decorator]
              reject_on_worker_lost=True, ignore_result=True)
    def callback(self: Any, callback_id: str) -> str:
        return run_callback(runtime_for(self.app), callback_id)


def send_with_celery(app: Any, default_queue: str, items: list[CallbackDue]) -> None:
    """Publish callbacks as Celery tasks (the task id is the callback's id, so a message
    published again is the same task in Flower)."""
    with app.producer_or_acquire() as producer:
        for item in items:
            where = f"{item.step}." if item.scope == "step" and item.step else ""
            app.send_task(CALLBACK_TASK, args=[item.id], task_id=item.id,
                          queue=item.queue or default_queue, producer=producer,
                          shadow=f"{item.flow}.{where}{item.kind}",
                          headers={"flowkit_run": item.run_id, "flowkit_flow": item.flow},
                          retry=True,
                          retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
