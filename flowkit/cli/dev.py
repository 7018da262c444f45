"""``flowkit dev``: run one flow with no servers (scheduler and worker in this process,
SQLite store, Celery's in-memory transport), printing each step's state as it changes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings, redact
from ..connectivity import probe_broker
from . import approvals
from .common import current_user, friendly_errors, open_store, parse_params, settings_of
from .daemons import active_specs, make_scheduler
from .run_view import format_run, run_details
from .runs import trigger_run

if TYPE_CHECKING:
    from ..scheduler.loop import Scheduler
    from ..store.sql import SqlStore

#: Exit codes of a `flowkit dev` stopped by a signal, as a shell reports them (128 + signum).
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@click.command()
@click.argument("flow")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--timeout", default=300.0, show_default=True, type=click.FloatRange(1), help="Give up after this many seconds."
)
@click.option(
    "--approve",
    "approve_steps",
    multiple=True,
    metavar="STEP",
    help="Approve this approval step when it waits (repeatable; 'all' for every one).",
)
@click.option(
    "--reject",
    "reject_steps",
    multiple=True,
    metavar="STEP",
    help="Reject this approval step when it waits (repeatable; 'all' for every one).",
)
@click.pass_context
def dev(
    ctx: click.Context,
    flow: str,
    params: tuple[str, ...],
    timeout: float,
    approve_steps: tuple[str, ...],
    reject_steps: tuple[str, ...],
) -> None:
    """Run FLOW once with no servers: scheduler and worker in this process, SQLite store,
    Celery's in-memory transport. Exit 0 if the run succeeds, 1 if not; 130 on Ctrl-C and
    143 on SIGTERM, within a second, with the run cancelled and its shell commands killed.

    An approval step that waits is decided by --approve/--reject; otherwise flowkit prints
    the `flowkit approve/reject` command to run from another terminal, and keeps waiting."""
    from ..devrun import DevSession

    signalled = _catch_stop_signals()
    settings, store, app, sched = _dev_setup(ctx)
    if signalled.is_set():  # before the run exists: nothing to stop
        _hard_exit(_SIGNAL_EXIT[signalled.signum])
    with friendly_errors():
        if approve_steps or reject_steps:  # check the step names before creating the run
            from ..loading.sync import sync_dags

            sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
            approvals.check_dev_decisions(store.flow_spec(flow), approve_steps, reject_steps)
        run_id = trigger_run(
            settings, store, flow, parse_params(params), reason="flowkit dev", notify=False, trigger="dev"
        )
        spec = store.flow_spec(flow)
        on_change = approvals.DevApprovals(
            store,
            settings,
            run_id,
            approve=approve_steps,
            reject=reject_steps,
            user=current_user(),
            wake=lambda: sched.events.publish({"type": "approval_decided", "run_id": run_id}),
        )
        store.sync_flow_caps(active_specs(store))
    # The embedded worker serves every queue this flow's steps name, not just the default.
    queues = sorted({settings.default_queue} | {s.queue for s in spec.steps if s.queue})
    click.echo(
        f"run {run_id} of {flow}: started (store {redact(settings.database_url)}, broker {redact(settings.broker_url)})"
    )
    session = DevSession(app, sched, store, run_id, queues)
    session.start()
    final = follow(store, run_id, timeout, click.echo, on_change, stop=signalled)
    if final == "interrupted":
        _dev_interrupted(session, run_id, signalled.signum)
    from ..execution.callbacks import wait_for_callbacks

    if final != "timeout" and wait_for_callbacks(store, run_id, timeout=10.0):
        click.echo(f"run {run_id}: callbacks still pending after 10 s; not waiting longer")
    click.echo("")
    click.echo(format_run(run_details(store, run_id)))
    _dev_exit(ctx, 0 if final == "success" else 1, clean=session.close())


class _StopSignal(threading.Event):
    """Set by SIGINT or SIGTERM; ``signum`` says which came first."""

    signum = signal.SIGINT


def _catch_stop_signals() -> _StopSignal:
    """SIGINT and SIGTERM only set an event: the dev loop stops on it, and a second Ctrl-C
    while it stops is absorbed rather than raised in whatever thread code runs."""
    got = _StopSignal()

    def handler(signum: int, _frame: Any) -> None:
        if not got.is_set():
            got.signum = signal.Signals(signum)
            got.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return got


def _dev_setup(ctx: click.Context) -> tuple[Settings, SqlStore, Any, Scheduler]:
    """Settings (memory broker unless one was given), the SQLite store with this process
    holding its scheduler lease, runs an earlier killed dev left closed, the app and scheduler."""
    from dataclasses import replace

    from ..devrun import close_leftover_runs, hold_lease
    from ..execution.celery_app import make_app
    from ..execution.runtime import set_runtime

    settings = settings_of(ctx)
    if not ctx.obj["broker_given"]:
        settings = replace(settings, broker_url="memory://localhost/")
    with friendly_errors():
        probe_broker(settings.broker_url)  # interactive: say at once that it is down
        store = open_store(settings, auto_upgrade=True)
        lease = hold_lease(store)
        if lease is not None:
            ctx.call_on_close(lease.release)  # the process exits then; a test's may not
            closed = close_leftover_runs(store)
            if closed:
                click.echo(
                    f"closed {len(closed)} run(s) a killed flowkit dev left running, not "
                    f"resumed: {', '.join(r['id'] + ' (' + r['flow_name'] + ')' for r in closed)}"
                )
        app = make_app(settings)
        if settings.broker_url.startswith("memory"):
            app.conf.broker_transport_options = {**app.conf.broker_transport_options, "polling_interval": 0.01}
        app.flowkit_settings = settings
        set_runtime(None)
        sched = make_scheduler(settings, store, app)
    return settings, store, app, sched


def _dev_interrupted(session: Any, run_id: str, signum: int) -> None:
    """Ctrl-C or SIGTERM: stop everything, say so in one line, exit at once."""
    name = signal.Signals(signum).name
    # The worker's "outcome discarded" lines are what an interrupt means: the line below says it.
    logging.getLogger("flowkit.execution").setLevel(logging.ERROR)
    stopped = session.interrupt(name)
    done = stopped.run.removeprefix(f"run {run_id}: ")
    killed = f"; {stopped.shells} shell command process group(s) killed" if stopped.shells else ""
    click.echo(f"run {run_id}: flowkit dev interrupted ({name}): {done}{killed}")
    _hard_exit(_SIGNAL_EXIT.get(signal.Signals(signum), 1))


def _dev_exit(ctx: click.Context, code: int, *, clean: bool) -> None:
    """Exit with the run's outcome. A step body that ignored its timeout may still run in a
    worker thread (its attempt is recorded): then exit without waiting for it."""
    if not clean:
        _hard_exit(code)
    ctx.exit(code)


def _hard_exit(code: int) -> None:
    """Exit now, without joining the threads that still run step bodies."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _step_order(order: dict[str, int], name: str) -> tuple[int, int]:
    """Where step ``name`` is printed: in flow order, a map step's instances right under it."""
    from ..spec import split_instance

    base, index = split_instance(name)
    return order.get(base, len(order)), -1 if index is None else index


def follow(
    store: SqlStore,
    run_id: str,
    timeout: float,
    echo: Callable[[str], None],
    on_change: Callable[[str, str, Callable[[str], None]], None] | None = None,
    stop: threading.Event | None = None,
) -> str:
    """Print each step's state changes until the run ends; returns its final state,
    "timeout", or "interrupted" once ``stop`` is set."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    run = store.get_run(run_id)
    order = store.flow_spec(run["flow_name"], run["version"]).position
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return "interrupted"
        for s in sorted(store.step_runs(run_id), key=lambda r: _step_order(order, r["step"])):
            if seen.get(s["step"]) != s["state"]:
                seen[s["step"]] = s["state"]
                echo(f"  {s['step']:<24} {s['state']}")
                if on_change is not None:
                    with friendly_errors():
                        on_change(s["step"], s["state"], echo)
        state: str = store.get_run(run_id)["state"]
        if state in ("success", "failed", "cancelled"):
            echo(f"run {run_id}: {state}")
            return state
        if stop is not None:
            stop.wait(0.1)
        else:
            time.sleep(0.1)
    echo(f"run {run_id}: still running after {timeout:g} s; gave up waiting")
    return "timeout"
