"""Flows for tests/unit/test_backfill*.py and test_overlap*.py: an hourly three-step flow
(one scheduled run at a time) whose first step fails for the hours listed in the
BACKFILL_FAIL_HOURS environment variable, and an unscheduled flow."""

import os

from flowkit import Flow


def extract(ctx):
    hours = {int(h) for h in os.environ.get("BACKFILL_FAIL_HOURS", "").split(",") if h}
    if ctx.logical_date is not None and ctx.logical_date.hour in hours:
        raise RuntimeError(f"hour {ctx.logical_date.hour} is set to fail")
    dates = (ctx.logical_date, ctx.data_interval_start, ctx.data_interval_end)
    return [d.isoformat() if d else None for d in dates]


def noop(ctx):
    return ctx.step


hourly = (
    Flow("hourly_bf", schedule="0 * * * *", max_active_runs=1)
    .step("extract", extract)
    .step("transform", noop, after="extract")
    .step("load", noop, after="transform")
)

manual = Flow("manual_only").step("a", noop)
