"""Scheduled flows for tests/unit/test_schedule_sweep.py: a daily flow in Berlin with
catch-up from a start date, and an hourly UTC flow without catch-up."""

from datetime import datetime

from flowkit import Flow


def noop(ctx):
    return {"step": ctx.step}


def interval(ctx):
    """What a step sees of its run's schedule (None in a manual run)."""
    dates = (ctx.logical_date, ctx.data_interval_start, ctx.data_interval_end)
    return [d.isoformat() if d else None for d in dates]


berlin = Flow(
    "berlin_daily",
    schedule="30 2 * * *",
    timezone="Europe/Berlin",
    catchup=True,
    max_catchup=3,
    start_date=datetime(2026, 3, 26),
).step("only", noop)

hourly = Flow("hourly_latest", schedule="0 * * * *").step("only", interval)
