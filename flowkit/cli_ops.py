"""``flowkit pools`` and ``flowkit status``: the engine's limits and health, as an operator
sees them. Registered on the main command group (see the bottom of flowkit/cli.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from .cli import CliError, _echo_json, _settings, _store, _table, friendly_errors, main
from .config import Settings
from .store.ledger import LOCK_CAPACITY


@main.group()
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
        raise click.BadParameter(f"{name!r} is not a pool name; use letters, digits, '_', '.' and '-'",
                                 param_hint="NAME")
    with friendly_errors():
        store = _store(_settings(ctx))
        store.set_pool(name, slots)
    click.echo(f"pool {name}: {slots} slot(s)")


@pools.command("delete")
@click.argument("name")
@click.pass_context
def pools_delete(ctx: click.Context, name: str) -> None:
    """Delete an idle pool (steps that name it then fail with a message saying so)."""
    with friendly_errors():
        _store(_settings(ctx)).delete_pool(name)
    click.echo(f"pool {name}: deleted")


def _limit_rows(store: Any) -> list[dict[str, Any]]:
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
        out.append({"kind": kind, "name": name or kind, "used": used, "capacity": capacity,
                    "state": state, "held_by_attempts": held, "balanced": ledger == held})
    return out


@pools.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pools_list(ctx: click.Context, as_json: bool) -> None:
    """Pools with their slots in use."""
    with friendly_errors():
        rows = [r for r in _limit_rows(_store(_settings(ctx))) if r["kind"] == "pool"]
    if as_json:
        _echo_json(rows)
        return
    click.echo(_table(["pool", "slots", "in use"],
                      [[r["name"], str(r["capacity"]), str(r["used"])] for r in rows]))


def status_report(settings: Settings, store: Any, depth: Any = None) -> dict[str, Any]:
    """What `flowkit status` shows: schedulers, queues and backpressure, limits, in flight."""
    from .store.sql import utcnow

    now = utcnow()
    schedulers = []
    for s in store.schedulers():
        age = (now - s["heartbeat_at"]).total_seconds()
        alive = age < 3 * max(settings.sweep_seconds, 1.0)
        schedulers.append({"name": s["name"], "alive": alive, "last_loop_at": s["last_loop_at"],
                           "seconds_since_heartbeat": round(age, 1), "stats": s["stats"]})
    queues: dict[str, Any] = {}
    for s in schedulers:
        if s["alive"]:
            for q, g in (s["stats"].get("backpressure") or {}).items():
                queues[q] = {"scheduler_view": g}
    if depth is not None:
        for q in sorted(set(queues) | {settings.default_queue}):
            try:
                d = depth(q)
            except Exception as exc:  # the broker may be away; say so, show the rest
                d = f"unreadable: {exc}"
            entry = queues.setdefault(q, {})
            entry["depth"] = d
            if isinstance(d, int):
                entry["backpressure"] = ("engaged" if (entry.get("scheduler_view") or {}).get("engaged")
                                         else "off")
    limits = _limit_rows(store)
    return {
        "at": now, "schedulers": schedulers, "queues": queues,
        "watermarks": {"high": settings.queue_high_watermark, "low": settings.queue_low_watermark},
        "global_cap": next((r for r in limits if r["kind"] == "global"), None),
        "pools": [r for r in limits if r["kind"] == "pool"],
        "locks": [r for r in limits if r["kind"] == "lock"],
        "flows": [r for r in limits if r["kind"] == "flow"],
        "in_flight": store.in_flight(), "waiting": store.waiting_count(),
        "paused_flows": [f["name"] for f in store.list_flows() if f["paused"]],
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-broker", is_flag=True, help="Do not read queue depths from the broker.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, no_broker: bool) -> None:
    """Schedulers (alive, last loop), queue depths and backpressure, slots in use per pool,
    lock and cap, attempts in flight and steps waiting for a slot."""
    settings = _settings(ctx)
    with friendly_errors():
        store = _store(settings)
        depth = None
        if not no_broker and not settings.broker_url.startswith("memory"):
            from .celery_app import make_app
            from .dispatch.celery import CeleryDispatcher

            depth = CeleryDispatcher(make_app(settings), settings).queue_depth
        report = status_report(settings, store, depth)
    if as_json:
        _echo_json(report)
        return
    lines = []
    if not report["schedulers"]:
        lines.append("schedulers: none has run on this database")
    for s in report["schedulers"]:
        last = s["last_loop_at"].strftime("%H:%M:%S") if isinstance(s["last_loop_at"], datetime) else "-"
        lines.append(f"scheduler {s['name']}: {'alive' if s['alive'] else 'NOT RESPONDING'}, last loop "
                     f"{last} ({s['seconds_since_heartbeat']:g} s ago)")
    wm = report["watermarks"]
    lines.append(f"\nqueues (backpressure at {wm['high']}, released at {wm['low']}):")
    for q, info in report["queues"].items():
        lines.append(f"  {q}: {info.get('depth', '?')} waiting, backpressure {info.get('backpressure', '?')}")
    cap = report["global_cap"]
    lines.append(f"\nin flight: {report['in_flight'].get('queued', 0)} queued, "
                 f"{report['in_flight'].get('running', 0)} running; {report['waiting']} step(s) waiting "
                 f"for a slot; global cap {cap['state'] if cap else 'none'}")
    if report["paused_flows"]:
        lines.append(f"paused flows: {', '.join(report['paused_flows'])} (`flowkit flows unpause FLOW`)")
    rows = [[r["kind"], r["name"], r["state"], "yes" if r["balanced"] else "NO"]
            for r in report["pools"] + report["locks"] + report["flows"]]
    if rows:
        lines += ["", _table(["limit", "name", "in use", "balanced"], rows)]
    click.echo("\n".join(lines))
    if any(not r["balanced"] for r in report["pools"] + report["locks"] + report["flows"]):
        raise CliError("the slot ledger does not balance; see `flowkit status --json`")
