"""``flowkit pools`` and ``flowkit status``: the engine's limits and health, as an operator
sees them. Added to the command group by :mod:`flowkit.cli.root`."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings, redact
from ..store.ledger import LOCK_CAPACITY
from .common import CliError, echo_json, format_table, friendly_errors, open_store, settings_of

if TYPE_CHECKING:
    from ..store.sql import SqlStore


@click.group()
def pools() -> None:
    """Named pools of slots: a step with pool="db", slots=1 holds one while queued or running."""


@pools.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(1, 1_000_000))
@click.pass_context
def pools_set(ctx: click.Context, name: str, slots: int) -> None:
    """Create pool NAME with SLOTS slots, or resize it (running steps keep their slots)."""
    import re

    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$", name):
        raise click.BadParameter(
            f"{name!r} is not a pool name; use letters, digits, '_', '.' and '-'", param_hint="NAME"
        )
    with friendly_errors():
        store = open_store(settings_of(ctx))
        store.set_pool(name, slots)
    click.echo(f"pool {name}: {slots} slot(s)")


@pools.command("delete")
@click.argument("name")
@click.pass_context
def pools_delete(ctx: click.Context, name: str) -> None:
    """Delete an idle pool (steps that name it then fail with a message saying so)."""
    with friendly_errors():
        open_store(settings_of(ctx)).delete_pool(name)
    click.echo(f"pool {name}: deleted")


def _limit_rows(store: SqlStore) -> list[dict[str, Any]]:
    """Every ledger row, with whether it balances against the holds of live attempts."""
    balance = store.ledger_balance()
    out = []
    for row in store.limits():
        kind, _, name = row["key"].partition(":")
        used, capacity = row["used"], row["capacity"]
        ledger, held = balance.get(row["key"], (used, 0))
        if kind == "lock":
            state = "exclusive" if used >= LOCK_CAPACITY else (f"{used} shared" if used else "free")
            capacity = None
        else:
            state = f"{used}/{capacity if capacity is not None else 'unlimited'}"
        out.append(
            {
                "kind": kind,
                "name": name or kind,
                "used": used,
                "capacity": capacity,
                "state": state,
                "held_by_attempts": held,
                "balanced": ledger == held,
            }
        )
    return out


@pools.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pools_list(ctx: click.Context, as_json: bool) -> None:
    """Pools with their slots in use."""
    with friendly_errors():
        rows = [r for r in _limit_rows(open_store(settings_of(ctx))) if r["kind"] == "pool"]
    if as_json:
        echo_json(rows)
        return
    click.echo(
        format_table(["pool", "slots", "in use"], [[r["name"], str(r["capacity"]), str(r["used"])] for r in rows])
    )


#: `flowkit status` lists a cleanly stopped scheduler for this long (`--json` lists all).
STOPPED_SHOWN_SECONDS = 3600.0


def _scheduler_role(row: dict[str, Any], alive: bool, lease: dict[str, Any] | None, sqlite: bool) -> str:
    """active | standby | stopped | not responding. Active comes from the lease (PostgreSQL)
    or the single scheduler's own word (SQLite), and never from a scheduler gone silent."""
    if row["stopped_at"] is not None:
        return "stopped"
    if not alive:
        return "not responding"
    if sqlite:
        return "active" if row["stats"].get("role") == "active" else "standby"
    holds = lease is not None and lease["holder"] == row["name"] and not lease["expired"]
    return "active" if holds else "standby"


def scheduler_rows(
    settings: Settings, store: SqlStore, now: datetime, lease: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Every scheduler with its role, judged by its own sweep interval (from its row)."""
    out = []
    for s in store.schedulers():
        age = (now - s["heartbeat_at"]).total_seconds()
        sweep = float(s["config"].get("sweep_seconds") or settings.sweep_seconds)
        alive = s["stopped_at"] is None and age < 3 * max(sweep, 1.0)
        role = _scheduler_role(s, alive, lease, store.is_sqlite)
        out.append(
            {
                "name": s["name"],
                "role": role,
                "alive": alive,
                "heartbeat_at": s["heartbeat_at"],
                "last_loop_at": s["last_loop_at"],
                "seconds_since_heartbeat": round(age, 1),
                "stopped_at": s["stopped_at"],
                "config": s["config"],
                "stats": s["stats"],
                "lease_token": lease["token"] if lease and role == "active" else None,
            }
        )
    return out


def _watermarks(schedulers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The watermarks the active scheduler runs with (else a live standby's), as it recorded
    them at its start; None if no running scheduler recorded any."""
    live = [s for s in schedulers if s["role"] == "active"] + [s for s in schedulers if s["role"] == "standby"]
    for s in live:
        if "queue_high_watermark" in s["config"]:
            return {
                "high": s["config"]["queue_high_watermark"],
                "low": s["config"]["queue_low_watermark"],
                "scheduler": s["name"],
            }
    return None


def broker_problem(exc: BaseException, url: str) -> str:
    """``redis://host:6379/0: connection refused``: the broker and why, on one line."""
    from ..connectivity import classify_url_problem

    cause: BaseException | None = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__cause__ or cause.__context__
    reason = (
        os.strerror(cause.errno).lower()
        if isinstance(cause, OSError) and cause.errno
        else classify_url_problem(exc).reason
    )
    return f"{redact(url)}: {' '.join(reason.split())[:200]}"


def _queue_rows(schedulers: list[dict[str, Any]], settings: Settings, depth: Any) -> tuple[dict[str, Any], str | None]:
    """Queue depths and backpressure as the active scheduler sees them; the second value says
    why the broker could not be read (then no depth is shown)."""
    queues: dict[str, Any] = {}
    for s in schedulers:
        if s["role"] == "active":
            for q, g in (s["stats"].get("backpressure") or {}).items():
                queues[q] = {"scheduler_view": g}
    if depth is None:
        return queues, None
    for q in sorted(set(queues) | {settings.default_queue}):
        try:
            d = depth(q)
        except Exception as exc:  # the broker is away: one line says so, the rest is shown
            return queues, broker_problem(exc, settings.broker_url)
        entry = queues.setdefault(q, {})
        entry["depth"] = d
        entry["backpressure"] = "engaged" if (entry.get("scheduler_view") or {}).get("engaged") else "off"
    return queues, None


def status_report(settings: Settings, store: SqlStore, depth: Any = None) -> dict[str, Any]:
    """What `flowkit status` shows: schedulers, queues and backpressure, limits, in flight."""
    from ..sla.view import active_deadlines
    from ..store.sql import utcnow

    now = utcnow()
    lease = store.scheduler_lease()
    schedulers = scheduler_rows(settings, store, now, lease)
    queues, broker_down = _queue_rows(schedulers, settings, depth)
    limits = _limit_rows(store)
    return {
        "at": now,
        "schedulers": schedulers,
        "lease": lease,
        "queues": queues,
        "broker_unreachable": broker_down,
        "watermarks": _watermarks(schedulers),
        "global_cap": next((r for r in limits if r["kind"] == "global"), None),
        "pools": [r for r in limits if r["kind"] == "pool"],
        "locks": [r for r in limits if r["kind"] == "lock"],
        "flows": [r for r in limits if r["kind"] == "flow"],
        "in_flight": store.in_flight(),
        "waiting": store.waiting_count(),
        "paused_flows": [f["name"] for f in store.list_flows() if f["paused"]],
        "deadlines": active_deadlines(store, now),  # slack of active runs with a deadline
    }


def _clock(value: Any) -> str:
    return value.strftime("%H:%M:%S") if isinstance(value, datetime) else "-"


def scheduler_lines(report: dict[str, Any]) -> list[str]:
    if not report["schedulers"]:
        return ["schedulers: none has run on this database"]
    lines, hidden = [], 0
    for s in report["schedulers"]:
        since = f"({s['seconds_since_heartbeat']:g} s ago)"
        if s["role"] == "stopped":
            if (report["at"] - s["stopped_at"]).total_seconds() > STOPPED_SHOWN_SECONDS:
                hidden += 1
                continue
            lines.append(f"scheduler {s['name']}: stopped at {_clock(s['stopped_at'])}")
        elif s["role"] == "not responding":
            lines.append(f"scheduler {s['name']}: NOT RESPONDING, last heartbeat {_clock(s['heartbeat_at'])} {since}")
        else:
            token = f", fencing token {s['lease_token']}" if s["lease_token"] is not None else ""
            lines.append(
                f"scheduler {s['name']}: {s['role']}{token}, last heartbeat {_clock(s['heartbeat_at'])} {since}"
            )
    if hidden:
        lines.append(f"({hidden} scheduler(s) stopped over an hour ago; `flowkit status --json` lists them)")
    return lines


def queue_lines(report: dict[str, Any]) -> list[str]:
    wm = report["watermarks"]
    if report["broker_unreachable"]:
        return [f"\nqueues: broker unreachable ({report['broker_unreachable']})"]
    head = (
        f"\nqueues (backpressure at {wm['high']}, released at {wm['low']}, as scheduler {wm['scheduler']} runs):"
        if wm
        else "\nqueues (watermarks unknown: no running scheduler recorded them):"
    )
    return [head] + [
        f"  {q}: {info.get('depth', '?')} waiting, backpressure {info.get('backpressure', '?')}"
        for q, info in report["queues"].items()
    ]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-broker", is_flag=True, help="Do not read queue depths from the broker.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, no_broker: bool) -> None:
    """Schedulers (active, standby, stopped or not responding), queue depths and backpressure
    at the watermarks the active scheduler runs with, slots in use per pool, lock and cap,
    attempts in flight and steps waiting for a slot."""
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        depth = None
        if not no_broker and not settings.broker_url.startswith("memory"):
            from ..dispatch.celery import CeleryDispatcher
            from ..execution.celery_app import make_app

            depth = CeleryDispatcher(make_app(settings), settings).queue_depth
        report = status_report(settings, store, depth)
    if as_json:
        echo_json(report)
        return
    lines = scheduler_lines(report) + queue_lines(report)
    cap = report["global_cap"]
    lines.append(
        f"\nin flight: {report['in_flight'].get('queued', 0)} queued, "
        f"{report['in_flight'].get('running', 0)} running; {report['waiting']} step(s) waiting "
        f"for a slot; global cap {cap['state'] if cap else 'none'}"
    )
    if report["paused_flows"]:
        lines.append(f"paused flows: {', '.join(report['paused_flows'])} (`flowkit flows unpause FLOW`)")
    rows = [
        [r["kind"], r["name"], r["state"], "yes" if r["balanced"] else "NO"]
        for r in report["pools"] + report["locks"] + report["flows"]
    ]
    if rows:
        lines += ["", format_table(["limit", "name", "in use", "balanced"], rows)]
    from ..sla.view import status_lines

    lines += status_lines(report["deadlines"])
    click.echo("\n".join(lines))
    if any(not r["balanced"] for r in report["pools"] + report["locks"] + report["flows"]):
        raise CliError("the slot ledger does not balance; see `flowkit status --json`")


@click.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply Alembic migrations up to the newest schema."""
    from ..store.sql import SqlStore

    settings = settings_of(ctx)
    with friendly_errors():
        revision = SqlStore(settings.database_url).upgrade()
    click.echo(f"database {redact(settings.database_url)} at schema {revision}")
