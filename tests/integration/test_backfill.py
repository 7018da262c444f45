"""A backfill on real services (PostgreSQL, Redis, a `flowkit scheduler` and a `flowkit
worker` subprocess): under its own cap, beside a flow whose scheduled runs keep starting."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from flowkit.store import backfill_ops as bo
from flowkit.store.sql import utcnow

from .procs import wait_for
from .services import cluster_on_fresh_services

DAGS = "tests/dags/backfill_it"
CAP = 3
DAYS = 3
INTERVALS = DAYS * 24


def test_a_backfill_under_its_cap_beside_scheduled_runs_that_keep_starting(tmp_path: Path) -> None:
    with cluster_on_fresh_services(tmp_path, DAGS, workers=[("w", 2)], FLOWKIT_SWEEP_SECONDS="1") as (cluster, store):
        # Given a running scheduler and worker, and the ticker flow being scheduled
        wait_for(lambda: store.list_runs("bf_ticker"), 30, "a first scheduled run of bf_ticker", cluster)
        first = (utcnow() - timedelta(days=DAYS + 1)).date()
        start, end = first.isoformat(), (first + timedelta(days=DAYS)).isoformat()
        # When three days of hourly intervals are backfilled, 3 at most at once
        out = cluster.cli(
            "backfill", "create", "bf_hourly", "--start", start, "--end", end, "--max-active-runs", str(CAP)
        )
        bf = int(out.stdout.strip())
        began = utcnow()
        most = 0
        deadline = time.monotonic() + 180
        while bo.get_backfill(store, bf)["state"] != "done":
            assert time.monotonic() < deadline, cluster.logs()
            runs = [r for r in store.list_runs("bf_hourly", limit=1000) if r["backfill_id"] == bf]
            most = max(most, sum(r["state"] in ("queued", "running") for r in runs))
            time.sleep(0.05)
        ended = utcnow()
        # Then all 72 intervals of the range succeeded, never more than 3 active
        runs = [r for r in store.list_runs("bf_hourly", limit=1000) if r["backfill_id"] == bf]
        assert len(runs) == INTERVALS and {r["state"] for r in runs} == {"success"}
        assert 1 <= most <= CAP
        shown = cluster.cli("backfill", "show", str(bf)).stdout
        assert f"progress  {INTERVALS} done, 0 running, 0 failed, 0 kept (existing run left alone), 0 left" in shown
        assert [e for e in store.events() if e["action"] == "backfill_done"]
        # And the ticker's scheduled runs kept starting meanwhile, each soon after it was due
        ticks = [
            r
            for r in store.list_runs("bf_ticker", limit=1000)
            if r["started_at"] and began <= r["logical_date"] <= ended
        ]
        assert len(ticks) >= 2, f"{len(ticks)} tick(s) due in {began} .. {ended}\n{cluster.logs()}"
        late = max((r["started_at"] - r["logical_date"]).total_seconds() for r in ticks)
        assert late < 3.0, f"a scheduled run started {late:.2f} s after it was due"
