"""The Celery tasks a worker runs: ``flowkit.execute`` (one step attempt) and
``flowkit.callback`` (one callback), and the remote-control command a cancel broadcasts.
Not public API. Registered on an app by :func:`flowkit.execution.celery_app.make_app`."""

from __future__ import annotations

import logging
from typing import Any

from ..dispatch.task_names import CALLBACK_TASK, EXECUTE_TASK, STOP_COMMAND
from ..observe.fields import attempt_fields
from .attempt import on_hard_timeout, run_attempt
from .callbacks import run_callback
from .cancel import stop_cancelled
from .runtime import runtime_for

log = logging.getLogger(__name__)


def register(app: Any) -> None:
    """Register flowkit's tasks on ``app`` (and, once per process, the stop command)."""
    _register_stop_command()
    _register_execute(app)
    _register_callback(app)


def _register_stop_command() -> None:
    from celery.worker import state as worker_state
    from celery.worker.control import Panel, control_command

    if STOP_COMMAND in Panel.data:  # a process-wide registry: once per process
        return

    def flowkit_stop(state: Any, task_ids: list[str], **_: Any) -> dict[str, str]:
        return stop_cancelled(task_ids, worker_state.active_requests, state.consumer.pool)

    control_command(name=STOP_COMMAND, args=[("task_ids", list)], signature="[task_id, ...]")(flowkit_stop)


def _register_execute(app: Any) -> None:
    from celery import Task
    from celery.exceptions import TimeLimitExceeded

    class ExecuteTask(Task):  # type: ignore[misc]
        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            # Runs in the worker's main process when the pool killed the child at the hard
            # limit; other failures never reach here (run_attempt records them itself).
            if isinstance(exc, TimeLimitExceeded) and len(args) == 3:
                try:
                    limit = float(exc.args[0]) if exc.args else 0.0
                    on_hard_timeout(runtime_for(self.app), args[0], args[1], int(args[2]), limit)
                except Exception:
                    log.exception("run %s step %s: could not record the hard timeout", args[0], args[1])

    @app.task(
        name=EXECUTE_TASK,
        bind=True,
        acks_late=True,
        base=ExecuteTask,  # type: ignore[untyped-decorator]
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def execute(self: Any, run_id: str, step: str, attempt: int) -> str:
        from celery.exceptions import Reject
        from sqlalchemy.exc import DBAPIError

        from ..errors import StoreUnavailable

        try:
            with attempt_fields(run_id, step, int(attempt)):  # every log line of it names it
                return run_attempt(runtime_for(self.app), run_id, step, int(attempt))
        except (StoreUnavailable, DBAPIError) as exc:
            # The store stayed away past FLOWKIT_STORE_RETRY_SECONDS while claiming: hand the
            # message back to the broker instead of dropping it.
            raise Reject(f"the store is unavailable: {exc}", requeue=True) from exc


def _register_callback(app: Any) -> None:
    @app.task(
        name=CALLBACK_TASK,
        bind=True,
        acks_late=True,  # type: ignore[untyped-decorator]
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def callback(self: Any, callback_id: str) -> str:
        return run_callback(runtime_for(self.app), callback_id)
