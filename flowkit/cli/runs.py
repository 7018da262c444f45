"""``flowkit trigger`` and ``flowkit runs list|show``: start a run, and read runs back.
(The operators' actions on runs, ``runs cancel|retry|mark``, are in :mod:`.actions`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from ..connectivity import broker_error, probe_broker
from ..errors import FlowkitError
from .common import (
    CliError,
    current_user,
    echo_json,
    format_duration,
    format_table,
    format_time,
    friendly_errors,
    open_store,
    parse_params,
    settings_of,
)
from .run_view import format_one_step, format_run, masked_params, one_step, run_details, state_label

if TYPE_CHECKING:
    from ..store.sql import SqlStore


@click.command()
@click.argument("flow")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A run parameter; repeat for more.")
@click.option("--reason", default="", help="Why you triggered it (kept in the audit trail).")
@click.option("--parent", "parent", default=None, metavar="RUN", help="Record RUN as the new run's parent (lineage).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trigger(
    ctx: click.Context, flow: str, params: tuple[str, ...], reason: str, parent: str | None, as_json: bool
) -> None:
    """Start a run of FLOW and print its id.

    The run is queued in the database, then the scheduler is woken through the broker. If
    the broker cannot be reached, flowkit prints one warning line and still exits 0: the run
    exists, and a scheduler that can reach the broker starts it at its next sweep
    (FLOWKIT_SWEEP_SECONDS). Exiting 1 would invite a retry that queues the run twice. A
    malformed FLOWKIT_BROKER_URL fails before any run is created.
    """
    settings = settings_of(ctx)
    raw = parse_params(params)
    with friendly_errors():
        store = open_store(settings)
        parent_run_id = store.resolve_run_id(parent) if parent is not None else None
        run_id = trigger_run(settings, store, flow, raw, reason=reason, parent_run_id=parent_run_id)
    if as_json:
        echo_json({"run_id": run_id, "flow": flow})
    else:
        click.echo(run_id)


def trigger_run(
    settings: Settings,
    store: SqlStore,
    flow: str,
    raw: dict[str, Any],
    *,
    reason: str = "",
    notify: bool = True,
    trigger: str = "manual",
    parent_run_id: str | None = None,
) -> str:
    """Create a run of ``flow`` (its file imported only if it changed) and wake the scheduler."""
    from ..loading.sync import spec_for_trigger
    from ..spec import resolve_params

    # Imports only this flow's file, and only if it changed: never waits on other modules.
    spec = spec_for_trigger(store, settings.dags_folder, flow, timeout=settings.dag_import_timeout_seconds)
    resolved = resolve_params(spec, raw, max_depth=settings.max_json_depth, max_bytes=settings.max_params_bytes)
    run_id = store.create_run(
        spec, resolved, actor=f"cli:{current_user()}", trigger=trigger, reason=reason, parent_run_id=parent_run_id
    )
    if run_id is None:  # only a run with a logical date that exists already; none is given here
        raise CliError(f'flow "{flow}": the store did not create the run')
    if store.is_paused(flow):
        click.echo(
            f'warning: flow "{flow}" is paused: run {run_id} stays queued until `flowkit flows unpause {flow}`',
            err=True,
        )
    if notify:
        warning = notify_scheduler(settings, run_id)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    return run_id


#: How long `flowkit trigger` waits for the broker (each connect, TLS handshake and read).
NOTIFY_TIMEOUT_SECONDS = 2.0


def notify_scheduler(settings: Settings, run_id: str) -> str | None:
    """Wake the scheduler now; if the broker is away its sweep finds the run anyway.

    Returns a one-line warning when the wake-up could not be published.
    """
    if settings.broker_url.startswith("memory"):
        return None  # an in-process broker: no scheduler elsewhere to wake
    try:
        from ..connectivity import bounded_transport_options
        from ..dispatch.events import BrokerEvents
        from ..execution.celery_app import make_app

        # One bounded try first: the publish below retries, and a broker that can never
        # answer (TLS to a plain server, a bad database index) should cost seconds, not minutes.
        probe_broker(settings.broker_url, timeout_seconds=NOTIFY_TIMEOUT_SECONDS)
        app = make_app(settings)
        app.conf.broker_connection_timeout = NOTIFY_TIMEOUT_SECONDS
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            **bounded_transport_options(settings.broker_url, NOTIFY_TIMEOUT_SECONDS),
        }
        BrokerEvents(app, settings.events_queue).publish({"type": "run_created", "run_id": run_id})
    except Exception as exc:  # the run is safe in SQL
        err = exc if isinstance(exc, FlowkitError) else broker_error(exc, settings.broker_url)
        return (
            f"run {run_id} is queued, but the scheduler was not woken: "
            f"{err} (a scheduler that reaches the broker starts the run at its next sweep)"
        )
    return None


@click.group()
def runs() -> None:
    """Inspect runs."""


@runs.command("list")
@click.option("--flow", help="Only runs of this flow.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs_list(ctx: click.Context, flow: str | None, limit: int, as_json: bool) -> None:
    """The newest runs."""
    with friendly_errors():
        store = open_store(settings_of(ctx))
        rows = store.list_runs(flow, limit=limit)
        specs: dict[tuple[str, str], Any] = {}
        rows = [{**r, "params": masked_params(store, r, specs)} for r in rows]
    if as_json:
        echo_json(rows)
        return
    click.echo(
        format_table(
            ["run", "flow", "state", "trigger", "version", "created", "duration"],
            [
                [
                    r["id"],
                    r["flow_name"],
                    state_label(r),
                    r["trigger"],
                    r["version"][:12],
                    format_time(r["created_at"]),
                    format_duration(r["started_at"], r["ended_at"]),
                ]
                for r in rows
            ],
        )
    )


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--events", "with_events", is_flag=True, help="Also print the audit trail.")
@click.option(
    "--step",
    "step_name",
    metavar="NAME",
    help="One step in full (a map step's instance: name[i]): every attempt with its "
    "error, full traceback and a shell step's output.",
)
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool, with_events: bool, step_name: str | None) -> None:
    """A run's steps: state, attempts, duration, worker, error."""
    with friendly_errors():
        store = open_store(settings_of(ctx))
        run_id = store.resolve_run_id(run_id)
        if step_name is not None:
            one = one_step(store, run_id, step_name)
            echo_json(one) if as_json else click.echo(format_one_step(one))
            return
        details = run_details(store, run_id, with_events=with_events or as_json)
    if as_json:
        echo_json(details)
        return
    events = details.pop("events", [])
    click.echo(format_run(details))
    if with_events:
        click.echo("\nAUDIT TRAIL")
        for e in events:
            where = (
                f"{e['step']}#{e['attempt']}"
                if e["attempt"]
                else (e["step"] or ("flow" if e.get("flow_name") and not e["run_id"] else "run"))
            )
            click.echo(
                f"{format_time(e['at'])}  {e['actor']:<28} {e['action']:<20} {where:<22} "
                f"{e['old_state'] or ''}->{e['new_state'] or ''}  {e['reason']}"
            )
