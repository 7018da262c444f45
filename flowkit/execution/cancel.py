"""What a worker does when an operator cancels an attempt it runs. Not public API."""

from __future__ import annotations

import logging
from typing import Any

from ..store.machine import task_id_for
from . import shell

log = logging.getLogger(__name__)


#: What a worker did about a cancelled attempt it runs (answered to the cancel's broadcast).
SHELL_STOPPED = "shell_stopped"
TERMINATED = "terminated"
NOT_INTERRUPTIBLE = "not_interruptible"


def stop_cancelled(task_ids: list[str], requests: Any, pool: Any) -> dict[str, str]:
    """Stop the cancelled attempts among this worker's active ``requests``; returns, per task
    id, what was done: a shell step's process group is flowkit's own and is stopped on every
    pool; a Python step is terminated only on prefork (its pool process gets SIGTERM). On the
    threads and solo pools a Python step cannot be interrupted (``NOT_INTERRUPTIBLE:<pool>``):
    it runs to its end and the store discards its outcome."""
    wanted = set(task_ids)
    pool_name = _pool_name(pool)
    outcomes: dict[str, str] = {}
    for request in list(requests):
        if request.id not in wanted or len(request.args or ()) != 3:
            continue
        run_id, step, number = request.args
        if shell.stop_for((run_id, step, int(number))):
            outcomes[request.id] = SHELL_STOPPED
        elif pool_name == "prefork":
            request.terminate(pool, signal="SIGTERM")
            outcomes[request.id] = TERMINATED
        else:  # Celery's terminate raises NotImplementedError on these pools
            outcomes[request.id] = f"{NOT_INTERRUPTIBLE}:{pool_name}"
        log.warning(
            "run %s step %s: attempt %s cancelled by an operator: %s", run_id, step, number, outcomes[request.id]
        )
    # A shell step whose command the heartbeat stopped may have ended before this message.
    for owner in shell.stopped_lately():
        if isinstance(owner, tuple) and len(owner) == 3 and task_id_for(*owner) in wanted:
            outcomes.setdefault(task_id_for(*owner), SHELL_STOPPED)
    return outcomes


def _pool_name(pool: Any) -> str:
    name = type(pool).__module__.rsplit(".", 1)[-1]
    return {"thread": "threads", "asynpool": "prefork"}.get(name, name)
