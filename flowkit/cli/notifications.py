"""``flowkit notifications list``: the outbox's notifications and every delivery attempt.
Added to the command group by :mod:`flowkit.cli.root`."""

from __future__ import annotations

from typing import Any

import click

from .common import friendly_errors, open_store, settings_of


@click.group()
def notifications() -> None:
    """Notifications (run failed, retries exhausted, approval waiting, SLA, backfill done)."""


def _line(n: dict[str, Any]) -> str:
    state = n["outcome"] or ("pending" if n["attempts"] == 0 else "retrying")
    where = " ".join(
        part
        for part in (
            f"flow {n['flow_name']}" if n["flow_name"] else "",
            f"run {n['run_id']}" if n["run_id"] else "",
            f"step {n['step']}" if n["step"] else "",
        )
        if part
    )
    return f"#{n['id']} {n['created_at']:%Y-%m-%d %H:%M:%S} {n['kind']} {where} [{state}, {n['attempts']} attempt(s)]"


@notifications.command("list")
@click.option("--run", "run_id", default=None, help="Only this run's notifications.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most this many.")
@click.pass_context
def notifications_list(ctx: click.Context, run_id: str | None, limit: int) -> None:
    """Newest first, each with its delivery attempts and their outcomes."""
    from ..notify.sender import list_notifications

    with friendly_errors():
        store = open_store(settings_of(ctx))
        if run_id is not None:
            run_id = store.resolve_run_id(run_id)
        rows = list_notifications(store, run_id=run_id, limit=limit)
    if not rows:
        click.echo("no notifications")
    for n in rows:
        click.echo(_line(n))
        for a in n["delivery_attempts"]:
            outcome = "delivered" if a["ok"] else f"failed: {a['detail']}"
            click.echo(f"    attempt {a['number']} {a['at']:%H:%M:%S} {a['notifier']}: {outcome}")
