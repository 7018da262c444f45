"""Flow and step callbacks: ``on_success``, ``on_failure``, ``on_retry``. Not public API
(users pass callables to ``Flow(...)`` and ``.step(...)``; they receive a
:class:`~flowkit.context.CallbackContext`).

A callback is user code, so it runs on a worker, with the code the run is pinned to, and
off the dispatch path:

1. The transaction that records an outcome (a worker finishing an attempt, or the
   scheduler ending a step or a run) writes the callback to an outbox (table
   ``callbacks``) when the flow or step defines one (:meth:`Machine.callback`).
2. After that transaction commits, whoever ran it publishes one ``flowkit.callback`` task
   per row, after the attempts it queued: the next step's dispatch never waits for it
   (:mod:`flowkit.dispatch.callbacks`).
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
import time
from typing import TYPE_CHECKING, Any

from .. import secrets
from ..context import CallbackContext
from ..store import callback_ops
from .encoding import describe_exception
from .runtime import WorkerRuntime, until_stored

if TYPE_CHECKING:
    from ..store.sql import SqlStore

log = logging.getLogger(__name__)


def wait_for_callbacks(store: SqlStore, run_id: str, timeout: float) -> int:
    """Wait until the run's callbacks are done (``flowkit dev`` before it exits); returns
    how many are still pending after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := callback_ops.pending(store, run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_callback(rt: WorkerRuntime, callback_id: str) -> str:
    """Run one callback on a worker (``rt`` is its WorkerRuntime); returns what happened."""
    rt.refresh_identity()
    cb = until_stored(f"callback {callback_id}: reading it", lambda: callback_ops.load(rt.store, callback_id))
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
        if scope == "notify":  # a callable in the flow's notify= (flowkit.notify.calls)
            from ..notify.calls import run_notify_call

            run_notify_call(flow, cb)
        else:
            _call(flow, cb)
    except Exception as exc:
        error = secrets.mask_stored(describe_exception(exc))  # what the worker stores goes masked
        log.exception(
            "run %s step %s: %s %s callback failed (the run's state is unchanged): %s",
            run_id,
            step or "-",
            scope,
            kind,
            error,
        )
    return _finish(rt, cb, error)


def _call(flow: Any, cb: dict[str, Any]) -> None:
    """Call the flow's or step's own callback with its context."""
    run_id, step, kind, scope = cb["run_id"], cb["step"], cb["kind"], cb["scope"]
    fn = flow.callback_for(kind, step if scope == "step" else None)
    if fn is None:
        raise LookupError(
            f"version {cb['version']} defines no {kind} callback on "
            f"{'step ' + repr(step) if scope == 'step' else 'the flow'}"
        )
    ctx = CallbackContext(
        flow=cb["flow_name"],
        run_id=run_id,
        step=step,
        kind=kind,
        state=cb["state"],
        attempt=cb["attempt"],
        error=cb["error"],
        params=cb["params"],
        version=cb["version"],
        log=logging.getLogger(f"flowkit.callback.{cb['flow_name']}"),
    )
    fn(ctx)


def _finish(rt: WorkerRuntime, cb: dict[str, Any], error: str | None) -> str:
    """Mark the callback done (its audit event says how it went)."""
    run_id, step, kind, scope = cb["run_id"], cb["step"], cb["kind"], cb["scope"]
    until_stored(
        f"run {run_id}: recording the {kind} callback",
        lambda: callback_ops.finish(rt.store, cb, actor=rt.name, error=error),
    )
    if error is None:
        log.info("run %s step %s: %s %s callback ran", run_id, step or "-", scope, kind)
    return "failed" if error else "ran"
