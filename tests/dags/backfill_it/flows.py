"""Flows for tests/integration/test_backfill.py and bench/backfill.py: an hourly three-step
flow to backfill, and a flow ticking every 2 seconds whose runs must keep starting on time."""

import time

from flowkit import Flow


def work(ctx):
    time.sleep(0.02)
    return ctx.logical_date.isoformat() if ctx.logical_date else None


hourly = (
    Flow("bf_hourly", schedule="0 * * * *", max_active_runs=1)
    .step("extract", work)
    .step("transform", work, after="extract")
    .step("load", work, after="transform")
)

ticker = Flow("bf_ticker", schedule="* * * * * */2").step("tick", work)
