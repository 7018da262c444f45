"""A burst of dataset events with the scheduler SIGKILLed while it consumes them.

N runs of ``burst_writer`` (bench/dags_burst) each write ``s3://burst/data`` once, while
``burst_target`` (``trigger_on=[Dataset("s3://burst/data")]``, one run per event) is
paused, so all N events wait in the trigger inbox. Then the target is unpaused, the
scheduler is SIGKILLed (its whole process group) once it has created some of the N
triggered runs, and a new scheduler is started. The figure: exactly N triggered runs,
every event consumed by exactly one run, 0 lost, 0 duplicated.

Runs on the shared PostgreSQL (a database of its own, dropped at the end) and Redis (the
database of ``--redis-db``, queues named for this run); a scheduler and a worker (``-c 2``)
as subprocesses of their own process groups, stopped by process group.

    .venv/bin/python bench/burst.py --events 1000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "bench" / "dags_burst"
PG_ADMIN = os.environ.get("FLOWKIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Daemon:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.log = open(logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit.cli", *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL its process group (the machine dying)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"burst: timed out after {timeout:.0f} s waiting for {what}")


def ended(store: Any, flow: str) -> tuple[int, int]:
    """(runs of ``flow`` ended, runs of ``flow``)."""
    runs = store.list_runs(flow, limit=1_000_000)
    return sum(1 for r in runs if r["state"] in ("success", "failed", "cancelled")), len(runs)


def run(events: int, redis_db: int, kill_at: float, logdir: Path) -> dict[str, Any]:
    import psycopg

    from flowkit.loading.sync import sync_dags
    from flowkit.spec import resolve_params
    from flowkit.store.sql import SqlStore

    name = f"flowkit_burst_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "FLOWKIT_DATABASE_URL": url,
        "FLOWKIT_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "FLOWKIT_DAGS_FOLDER": str(DAGS),
        "FLOWKIT_SWEEP_SECONDS": "2",
        "FLOWKIT_DEFAULT_QUEUE": f"flowkit-burst-{suffix}",
        "FLOWKIT_EVENTS_QUEUE": f"flowkit-burst-{suffix}.events",
        "PYTHONUNBUFFERED": "1",
    }
    store = SqlStore(url)
    daemons: list[Daemon] = []
    try:
        store.upgrade()
        sync_dags(store, str(DAGS))
        store.pause_flow("burst_target", by="bench")
        spec = store.flow_spec("burst_writer")
        writers = [str(store.create_run(spec, resolve_params(spec, {}), actor="bench")) for _ in range(events)]
        t0 = time.monotonic()
        daemons.append(Daemon("scheduler-1", ["scheduler"], env, logdir))
        daemons.append(Daemon("worker", ["worker", "-c", "2"], env, logdir))
        wait_for("the writers to end", lambda: ended(store, "burst_writer")[0] == events, 1800, 1.0)
        writers_s = time.monotonic() - t0
        wait_for("every event in the inbox", lambda: store.pending_trigger_count("burst_target") == events, 60)
        # Given: N events pending. When: unpaused, and the scheduler killed mid-consumption.
        t1 = time.monotonic()
        store.unpause_flow("burst_target", by="bench")
        threshold = max(1, int(events * kill_at))
        wait_for("the first triggered runs", lambda: ended(store, "burst_target")[1] >= threshold, 120, 0.01)
        daemons[0].kill()
        at_kill = ended(store, "burst_target")[1]
        pending_at_kill = store.pending_trigger_count("burst_target")
        daemons.append(Daemon("scheduler-2", ["scheduler"], env, logdir))
        wait_for("every event consumed", lambda: store.pending_trigger_count("burst_target") == 0, 600, 0.2)
        consumed_s = time.monotonic() - t1
        wait_for("the triggered runs to end", lambda: ended(store, "burst_target")[0] >= events, 1800, 1.0)
        all_done_s = time.monotonic() - t1
        # Then: one run per event, one event per run.
        runs = [r for r in store.list_runs("burst_target", limit=1_000_000) if r["trigger"] == "dataset"]
        inbox = store.trigger_events(target_flow="burst_target")
        per_run = Counter(e["consumed_run_id"] for e in inbox)
        consumed = [e for e in inbox if e["consumed_run_id"]]
        run_ids = {r["id"] for r in runs}
        lost = events - len({e["event_key"] for e in consumed if e["consumed_run_id"] in run_ids})
        duplicated = len(runs) - len(per_run) + sum(n - 1 for n in per_run.values())
        return {
            "events": events,
            "writer_runs_seconds": round(writers_s, 1),
            "scheduler_killed_with_runs_created": at_kill,
            "events_pending_at_kill": pending_at_kill,
            "triggered_runs": len(runs),
            "runs_succeeded": sum(1 for r in runs if r["state"] == "success"),
            "lost": lost,
            "duplicated": duplicated,
            "parents_match_writers": sorted(r["parent_run_id"] for r in runs) == sorted(writers),
            "consume_seconds_from_unpause": round(consumed_s, 1),
            "all_triggered_runs_done_seconds": round(all_done_s, 1),
        }
    finally:
        for d in daemons:
            d.stop()
        store.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="dataset events in the burst (default 1000)")
    parser.add_argument(
        "--redis-db", type=int, default=int(os.environ.get("FLOWKIT_TEST_REDIS_DB", "3")), help="Redis database"
    )
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="SIGKILL the scheduler once this share of runs exists (0.3)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--logs", metavar="DIR", default="/tmp/flowkit-burst-logs", help="daemon logs")
    args = parser.parse_args()
    if args.events < 1:
        parser.error(f"--events must be 1 or more, not {args.events}")
    if not 0 < args.kill_at < 1:
        parser.error(f"--kill-at must be between 0 and 1 (a share of the events), not {args.kill_at}")
    logdir = Path(args.logs)
    logdir.mkdir(parents=True, exist_ok=True)
    figures = run(args.events, args.redis_db, args.kill_at, logdir)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["triggered_runs"] == args.events and figures["lost"] == 0 and figures["duplicated"] == 0
    ok = ok and 0 < figures["scheduler_killed_with_runs_created"] < args.events
    print(f"burst: {'ok' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
