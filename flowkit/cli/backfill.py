"""``flowkit backfill create|list|show|pause|unpause|cancel``: a range of a flow's schedule
intervals run as one object. Added to the command group by :mod:`flowkit.cli.root`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from .common import (
    current_user,
    echo_json,
    format_table,
    format_time,
    friendly_errors,
    open_store,
    parse_params,
    settings_of,
)

#: Lines of a dry run printed before the rest is summed up.
DRY_RUN_LINES = 500


@click.group()
def backfill() -> None:
    """Backfills: past intervals of a scheduled flow, created lazily in their own lane."""


def _wake(ctx: click.Context, body: dict[str, Any]) -> None:
    """Tell the scheduler now (it looks at backfills at every sweep anyway)."""
    settings = settings_of(ctx)
    if settings.broker_url.startswith("memory"):
        return  # an in-process broker: no scheduler elsewhere to wake
    try:
        from ..dispatch.events import BrokerEvents
        from ..execution.celery_app import make_app

        app = make_app(settings)
        app.conf.broker_connection_timeout = 2
        BrokerEvents(app, settings.events_queue).publish(body)
    except Exception as exc:  # the next sweep picks it up
        click.echo(f"warning: the scheduler was not woken ({exc}); it acts at its next sweep", err=True)


@backfill.command("create")
@click.argument("flow")
@click.option("--start", required=True, metavar="DATE", help="Range start (YYYY-MM-DD[THH:MM], flow's time zone).")
@click.option("--end", required=True, metavar="DATE", help="Range end; intervals wholly inside the range run.")
@click.option(
    "--reprocess",
    type=click.Choice(["none", "failed", "all"]),
    default="none",
    show_default=True,
    help="What to do with an interval that already has a run that ended.",
)
@click.option(
    "--max-active-runs", type=click.IntRange(min=1), default=4, show_default=True, help="Its runs active at once."
)
@click.option("--backwards", is_flag=True, help="Newest interval first.")
@click.option("--dry-run", is_flag=True, help="Print the intervals and what would be done; change nothing.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A run parameter; repeat for more.")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@click.pass_context
def backfill_create(
    ctx: click.Context,
    flow: str,
    start: str,
    end: str,
    reprocess: str,
    max_active_runs: int,
    backwards: bool,
    dry_run: bool,
    params: tuple[str, ...],
    reason: str,
) -> None:
    """Backfill FLOW's schedule intervals between --start and --end.

    Runs are created by the scheduler, at most --max-active-runs at once, beside (not
    against) the flow's own max_active_runs. An interval whose run is queued or running is
    left alone; one whose run ended is kept (--reprocess none), run again if it failed
    (failed) or run again in any case (all)."""
    from ..store.backfill_ops import create_backfill, plan_backfill
    from ..store.backfill_ops import dry_run as plan

    raw = parse_params(params)
    with friendly_errors():
        store = open_store(settings_of(ctx))
        if dry_run:
            spec, lo, hi, total = plan_backfill(store, flow, start, end, reprocess=reprocess, backwards=backwards)
            _print_plan(plan(store, spec, lo, hi, reprocess=reprocess, backwards=backwards), total)
            return
        backfill_id = create_backfill(
            store,
            flow,
            start,
            end,
            reprocess=reprocess,
            max_active_runs=max_active_runs,
            backwards=backwards,
            params=raw,
            by=current_user(),
            reason=reason,
        )
    _wake(ctx, {"type": "backfill_created", "backfill_id": backfill_id})
    click.echo(backfill_id)


def _print_plan(planned: list[Any], total: int) -> None:
    counts: dict[str, int] = {}
    for i, p in enumerate(planned):
        counts[p.decision.action.value] = counts.get(p.decision.action.value, 0) + 1
        if i < DRY_RUN_LINES:
            run = f" (run {p.run_id})" if p.run_id else ""
            click.echo(
                f"{p.interval.start:%Y-%m-%d %H:%M} .. {p.interval.end:%Y-%m-%d %H:%M} UTC  "
                f"{p.decision.action.value}{run}: {p.decision.why}"
            )
    if total > DRY_RUN_LINES:
        click.echo(f"... {total - DRY_RUN_LINES} more interval(s)")
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    click.echo(f"dry run: {total} interval(s): {summary}; nothing created")


@backfill.command("list")
@click.option("--flow", default=None, help="Only this flow's backfills.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def backfill_list(ctx: click.Context, flow: str | None, limit: int, as_json: bool) -> None:
    """Newest first."""
    from ..store.backfill_ops import list_backfills

    with friendly_errors():
        rows = list_backfills(open_store(settings_of(ctx)), flow=flow, limit=limit)
    if as_json:
        echo_json(rows)
        return
    table = [
        [
            str(b["id"]),
            b["flow_name"],
            b["state"],
            f"{format_time(b['range_start'])} .. {format_time(b['range_end'])}",
            f"{b['handed']}/{b['total']}",
            b["reprocess"],
            str(b["max_active_runs"]),
        ]
        for b in rows
    ]
    click.echo(format_table(["id", "flow", "state", "range (UTC)", "handed", "reprocess", "cap"], table))


def _backfill_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a backfill id (a number; see `flowkit backfill list`)") from None


@backfill.command("show")
@click.argument("backfill_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def backfill_show(ctx: click.Context, backfill_id: str, as_json: bool) -> None:
    """Progress (done / running / failed / kept / left) and the estimated finish."""
    from ..store.backfill_ops import progress

    with friendly_errors():
        p = progress(open_store(settings_of(ctx)), _backfill_id(backfill_id))
    if as_json:
        echo_json(p)
        return
    b = p["backfill"]
    finish: datetime | None = p["estimated_finish"]
    lines = [
        f"backfill {b['id']}: flow {b['flow_name']}, {b['state']}",
        f"  range     {format_time(b['range_start'])} .. {format_time(b['range_end'])} UTC, "
        f"{b['total']} interval(s){', backwards' if b['backwards'] else ''}",
        f"  options   --reprocess {b['reprocess']}, --max-active-runs {b['max_active_runs']}"
        + (f", params {b['params']}" if b["params"] else ""),
        f"  progress  {p['done']} done, {p['running']} running, {p['failed']} failed, "
        f"{p['kept']} kept (existing run left alone), {p['left']} left",
        f"  created   {format_time(b['created_at'])} by {b['actor']}"
        + (f", ended {format_time(b['ended_at'])}" if b["ended_at"] else ""),
    ]
    if b["state"] in ("running", "paused"):
        lines.append(
            f"  finish    {format_time(finish)} UTC (estimated from its runs so far)"
            if finish
            else "  finish    no estimate yet (no run of it has ended)"
        )
    click.echo("\n".join(lines))


def _action(name: str, verb: str) -> Any:
    @backfill.command(name)
    @click.argument("backfill_id")
    @click.option("--reason", default="", help="Why (kept in the audit trail).")
    @click.pass_context
    def command(ctx: click.Context, backfill_id: str, reason: str) -> None:
        from ..store import backfill_ops

        with friendly_errors():
            store = open_store(settings_of(ctx))
            done = getattr(backfill_ops, f"{name}_backfill")(
                store, _backfill_id(backfill_id), by=current_user(), reason=reason
            )
        if isinstance(done, tuple):  # cancel: its queued runs had no attempt to revoke
            done = done[0]
        _wake(ctx, {"type": f"backfill_{name}", "backfill_id": backfill_id})
        click.echo(done)

    command.__doc__ = verb
    return command


backfill_pause = _action("pause", "Create and start no run more; its running runs go on.")
backfill_unpause = _action("unpause", "Let a paused backfill go on.")
backfill_cancel = _action("cancel", "Create nothing more: its queued runs are cancelled, its running runs finish.")
