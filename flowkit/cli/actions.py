"""Operators' actions: ``flowkit flows pause|unpause`` and ``flowkit runs cancel|retry|mark``.

Added to the command group by :mod:`flowkit.cli.root`. Each action is one
transaction in the store (:mod:`flowkit.store.operator_ops`), recorded in the run's audit
trail with ``--by`` and ``--reason``; then the stopped attempts are revoked on the broker
and the scheduler is woken, so it acts at once. A refusal is one ``error:`` line that says
the current state and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from .common import current_user, friendly_errors, open_store, settings_of

if TYPE_CHECKING:
    from ..store.sql import SqlStore

_BY = click.option(
    "--by", default=None, metavar="NAME", help="Who acts (kept in the audit trail; default: your OS user)."
)
_REASON = click.option("--reason", default="", help="Why (kept in the audit trail).")


def _finish(settings: Settings, result: Any, store: SqlStore | None = None, run_id: str | None = None) -> None:
    """Print the action's summary, then revoke and wake (warnings only: it is committed).
    With ``store`` and ``run_id`` (a cancel), also say what was and was not stopped."""
    from ..store.operator_ops import Notified, notify

    click.echo(result.summary)
    if settings.broker_url.startswith("memory") or (not result.revoke and result.wake is None):
        return  # an in-process broker: no scheduler or worker elsewhere to reach
    try:
        from ..dispatch.celery import CeleryDispatcher
        from ..dispatch.events import BrokerEvents
        from ..execution.celery_app import make_app

        app = make_app(settings)
        app.conf.broker_connection_timeout = 2
        done = notify(
            result, dispatcher=CeleryDispatcher(app, settings), events=BrokerEvents(app, settings.events_queue)
        )
    except Exception as exc:  # committed in SQL: the scheduler's sweep catches up
        done = Notified([f"the broker could not be reached ({exc}); the scheduler acts at its next sweep"])
    if store is not None and run_id is not None and result.revoke and done.stopped is not None:
        with friendly_errors():
            click.echo(stopped_line(_cancelled_from(store, run_id, result.revoke), done.stopped))
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)


def _cancelled_from(store: SqlStore, run_id: str, task_ids: list[str]) -> dict[str, str]:
    """The state each of these attempts was cancelled from (queued or running), by task id,
    as the cancel's audit trail recorded it."""
    by_attempt = {(a["step"], a["number"]): a["task_id"] for a in store.attempts(run_id) if a["task_id"] in task_ids}
    old: dict[str, str] = {}
    for event in store.events(run_id):
        task_id = by_attempt.get((event["step"], event["attempt"]))
        if event["action"] == "attempt_cancelled" and task_id is not None:
            old[task_id] = event["old_state"] or ""
    return old


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def stopped_line(cancelled_from: dict[str, str], stopped: dict[str, str]) -> str:
    """One line on what a cancel stopped and what it could not, from the state each attempt
    was cancelled from and what the workers answered (flowkit.execution.cancel.stop_cancelled)."""
    from ..execution.cancel import NOT_INTERRUPTIBLE, SHELL_STOPPED, TERMINATED

    queued = [t for t, old in cancelled_from.items() if old != "running" and t not in stopped]
    silent = [t for t, old in cancelled_from.items() if old == "running" and t not in stopped]
    shells = [t for t, what in stopped.items() if what == SHELL_STOPPED]
    killed = [t for t, what in stopped.items() if what == TERMINATED]
    stuck: dict[str, int] = {}
    for what in stopped.values():
        if what.startswith(NOT_INTERRUPTIBLE):
            pool = what.partition(":")[2] or "non-prefork"
            stuck[pool] = stuck.get(pool, 0) + 1
    parts = []
    if queued:
        parts.append(_count(len(queued), "queued attempt revoked", "queued attempts revoked"))
    if shells:
        parts.append(_count(len(shells), "shell step's process group killed", "shell steps' process groups killed"))
    if killed:
        parts.append(
            _count(
                len(killed),
                "running step terminated (SIGTERM to its prefork pool process)",
                "running steps terminated (SIGTERM to their prefork pool processes)",
            )
        )
    for pool, n in sorted(stuck.items()):
        parts.append(
            _count(
                n,
                f"Python step on a {pool} pool cannot be interrupted: its result will be discarded",
                f"Python steps on a {pool} pool cannot be interrupted: their results will be discarded",
            )
        )
    if silent:
        parts.append(
            _count(
                len(silent),
                "running attempt not stopped: no worker answered",
                "running attempts not stopped: no worker answered",
            )
            + " (a solo pool answers only between steps; a shell step's command is stopped at "
            "its worker's next heartbeat); the outcome will be discarded"
        )
    return "; ".join(parts) if parts else "nothing was running or queued"


def _sync_for(settings: Settings, store: SqlStore) -> None:
    """Load the dags folder first, so a flow defined since the last refresh is known."""
    from ..loading.loader import dag_files
    from ..loading.sync import sync_dags

    if dag_files(settings.dags_folder):
        sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)


@click.group()
def flows() -> None:
    """Pause and unpause flows."""


@flows.command("pause")
@click.argument("flow")
@_BY
@_REASON
@click.pass_context
def flows_pause(ctx: click.Context, flow: str, by: str | None, reason: str) -> None:
    """Start no new run of FLOW: triggered runs stay queued, schedule ticks are not created;
    running runs finish."""
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        _sync_for(settings, store)
        result = store.pause_flow(flow, by=by or current_user(), reason=reason)
    _finish(settings, result)


@flows.command("unpause")
@click.argument("flow")
@_BY
@_REASON
@click.pass_context
def flows_unpause(ctx: click.Context, flow: str, by: str | None, reason: str) -> None:
    """Let FLOW run again; its queued runs start now (within max_active_runs)."""
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        _sync_for(settings, store)
        result = store.unpause_flow(flow, by=by or current_user(), reason=reason)
    _finish(settings, result)


@click.command("cancel")
@click.argument("run_id")
@_BY
@_REASON
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, by: str | None, reason: str) -> None:
    """Cancel RUN: its steps not yet ended are cancelled and their slots given back; queued
    attempts are revoked, shell steps' commands stopped on every pool, Python steps
    terminated on the prefork pool. Says which running steps could not be stopped."""
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        run_id = store.resolve_run_id(run_id)
        result = store.cancel_run(run_id, by=by or current_user(), reason=reason)
    _finish(settings, result, store, run_id)


@click.command("retry")
@click.argument("run_id")
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="STEP",
    help="Run this step again, even if it succeeded; repeat for more. Default: the "
    "failed, upstream_failed and cancelled steps.",
)
@click.option("--downstream", is_flag=True, help="With --step: also every step downstream of them.")
@_BY
@_REASON
@click.pass_context
def runs_retry(
    ctx: click.Context, run_id: str, steps: tuple[str, ...], downstream: bool, by: str | None, reason: str
) -> None:
    """Run a finished RUN again from its failed steps (or the steps named); results of the
    other steps are kept and attempt numbers go on."""
    if downstream and not steps:
        raise click.BadParameter(
            "--downstream needs --step (the steps whose downstream to run again)", param_hint="--downstream"
        )
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        result = store.retry_run(
            store.resolve_run_id(run_id), steps=steps, downstream=downstream, by=by or current_user(), reason=reason
        )
    _finish(settings, result)


@click.command("mark")
@click.argument("run_id")
@click.argument("step")
@click.argument("state", type=click.Choice(["success", "skipped"]))
@click.option(
    "--result",
    "result",
    default=None,
    metavar="JSON",
    help="With success: the step's result, which its downstream steps get (JSON, at most "
    "FLOWKIT_MAX_RESULT_BYTES). Default: null (a map step: its instances' results).",
)
@_BY
@_REASON
@click.pass_context
def runs_mark(
    ctx: click.Context, run_id: str, step: str, state: str, result: str | None, by: str | None, reason: str
) -> None:
    """Give STEP of RUN the state success or skipped (it must not be queued or running); its
    downstream steps follow, and a finished run ends again."""
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        marked = store.mark_step(
            store.resolve_run_id(run_id),
            step,
            state,
            by=by or current_user(),
            reason=reason,
            result=result,
            max_result_bytes=settings.max_result_bytes,
        )
    _finish(settings, marked)
