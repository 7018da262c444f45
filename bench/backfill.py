"""The backfill shape: a backfill of N hourly intervals of a 3-step flow under
``--max-active-runs 8``, beside a flow scheduled every 2 seconds.

It reports whether every backfill run succeeded, the scheduler's resident memory (sampled
every 0.5 s, and its peak, VmHWM) and how late the scheduled flow's runs started against
their due times (started_at - logical_date: p50, p99, max) while the backfill ran. The
issue's figure is N = 8,760 (a year of hours): all succeed, RSS < 300 MB, p99 < 1 s.

    .venv/bin/python bench/backfill.py --intervals 200          # small, on a shared machine
    .venv/bin/python bench/backfill.py                          # the full 8,760

Its own PostgreSQL database, queues and daemons (``flowkit worker -c 2`` and ``flowkit
scheduler``) are created and removed as the other shapes' are (bench/harness.py). The
Redis database it FLUSHES before and after is ``--redis-db`` (one database for everything).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, BenchError, RedisDbs, ShapeEnv, rss_mb  # noqa: E402
from bench.shapes import percentile  # noqa: E402

FLOWS = '''"""bench/backfill.py: the flow backfilled and the flow whose runs must start on time."""
from flowkit import Flow


def noop(ctx):
    return None


hourly = (
    Flow("bench_bf_hourly", schedule="0 * * * *")
    .step("extract", noop)
    .step("transform", noop, after="extract")
    .step("load", noop, after="transform")
)
ticker = Flow("bench_bf_ticker", schedule="{tick}").step("tick", noop)
'''
RSS_LIMIT_MB = 300.0
LATE_P99_LIMIT_S = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--intervals", type=int, default=8760, help="hourly intervals to backfill (default 8760)")
    p.add_argument("--max-active-runs", type=int, default=8, help="the backfill's cap (default 8)")
    p.add_argument("--tick", default="* * * * * */2", help="the scheduled flow's cron (default every 2 s)")
    p.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--redis-db", type=int, default=14, help="the Redis database it flushes and uses (default 14)")
    p.add_argument("--timeout", type=float, default=None, help="seconds for the backfill (default 2 s/interval)")
    p.add_argument("--workdir", type=Path, default=None, help="logs go here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = p.parse_args(argv)
    if args.intervals < 1 or args.max_active_runs < 1:
        p.error("--intervals and --max-active-runs must be at least 1")
    return args


def open_shape(bench: Bench, tick: str) -> ShapeEnv:
    folder = bench.workdir / "backfill" / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_backfill_flows.py").write_text(FLOWS.replace("{tick}", tick))
    return ShapeEnv(bench, "backfill", folder, raw=False)


def backfill_range(intervals: int) -> tuple[str, str]:
    """A range of exactly ``intervals`` whole hours (UTC), ending an hour before now."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(hours=intervals)
    return start.strftime("%Y-%m-%dT%H:%M+00:00"), end.strftime("%Y-%m-%dT%H:%M+00:00")


def create(env: ShapeEnv, intervals: int, cap: int) -> int:
    start, end = backfill_range(intervals)
    args = ["backfill", "create", "bench_bf_hourly", "--start", start, "--end", end, "--max-active-runs", str(cap)]
    made = env.flowkit.cli(args)
    if made.returncode != 0:
        raise BenchError(f"`flowkit {' '.join(args)}` failed:\n{made.stdout}\n{made.stderr}")
    return int(made.stdout.strip().splitlines()[-1])


def wait_done(env: ShapeEnv, backfill_id: int, timeout: float) -> list[float]:
    """Poll the backfill until done; the scheduler's RSS (MB) sampled every 0.5 s."""
    from flowkit.store.backfill_ops import get_backfill

    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while get_backfill(env.flowkit.store, backfill_id)["state"] != "done":
        env.flowkit.check()
        if time.monotonic() > deadline:
            raise BenchError(f"backfill {backfill_id} not done after {timeout:g} s")
        rss = rss_mb(env.flowkit.scheduler.pid, "VmRSS")
        if rss is not None:
            samples.append(rss)
        time.sleep(0.5)
    return samples


def lateness(env: ShapeEnv, began: datetime, ended: datetime) -> list[float]:
    """started_at - logical_date of the ticker's runs due while the backfill ran."""
    runs = env.flowkit.store.list_runs("bench_bf_ticker", limit=100_000)
    return sorted(
        (r["started_at"] - r["logical_date"]).total_seconds()
        for r in runs
        if r["started_at"] and r["logical_date"] and began <= r["logical_date"] <= ended
    )


def measure(env: ShapeEnv, args: argparse.Namespace) -> dict[str, Any]:
    from flowkit.store.backfill_ops import progress

    store = env.flowkit.store
    backfill_id = create(env, args.intervals, args.max_active_runs)
    began = datetime.now(UTC)
    rss = wait_done(env, backfill_id, args.timeout or max(120.0, 2.0 * args.intervals))
    ended = datetime.now(UTC)
    p = progress(store, backfill_id)
    late = lateness(env, began, ended)
    peak = rss_mb(env.flowkit.scheduler.pid)
    rows = [r for r in store.list_runs("bench_bf_hourly", limit=args.intervals + 10) if r["backfill_id"]]
    out = {
        "intervals": args.intervals,
        "max_active_runs": args.max_active_runs,
        "store": args.store,
        "broker": "redis",
        "seconds": round((ended - began).total_seconds(), 1),
        "runs": len(rows),
        "succeeded": p["done"],
        "failed": p["failed"],
        "scheduler_rss_mb_max_sampled": max(rss) if rss else None,
        "scheduler_rss_mb_peak": peak,
        "ticker_runs": len(late),
        "late_s_p50": round(percentile(late, 50), 3) if late else None,
        "late_s_p99": round(percentile(late, 99), 3) if late else None,
        "late_s_max": round(late[-1], 3) if late else None,
    }
    out["ok"] = bool(
        p["done"] == args.intervals
        and late
        and out["late_s_p99"] < LATE_P99_LIMIT_S
        and peak is not None
        and peak < RSS_LIMIT_MB
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowkit-bench-backfill-"))
    bench = Bench("redis", args.store, workdir)
    bench.dbs = RedisDbs(args.redis_db, args.redis_db, args.redis_db)
    env = None
    try:
        env = open_shape(bench, args.tick)
        env.flowkit.prepare()
        env.flowkit.start_daemons()
        result = measure(env, args)
    finally:
        if env is not None:
            env.close()
        bench.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:30} {value}")
        print(f"logs: {workdir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
