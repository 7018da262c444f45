"""The sensor figure of issue 16: N sensors poking every second on a worker with ``-c 2``,
while another flow's steps keep running beside them (the sensors hold no worker between
pokes: each waits on the scheduler's SQL timer, as a retry does).

Two phases, each on a fresh store, queues and daemons (``flowkit scheduler`` and
``flowkit worker -c 2``): without sensors, then with N sensor runs parked on their timers.
In each, a 5-step chain of short steps (``bench_busy``, 20 ms each) runs back to back, two
runs in flight, for S seconds; the figures are its throughput and latencies, side by side.
Then the sensors' file lands and the bench times how long until every sensor run finished.

    .venv/bin/python bench/sensors.py --sensors 100 --seconds 60        # the issue's figure
    .venv/bin/python bench/sensors.py --sensors 20 --seconds 20         # small, on a shared machine

Flows: ``bench/dags_sensors/sensor_flows.py``. Redis database ``--redis-db`` is FLUSHED before
and after each phase. See bench/README.md ("Sensors").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REDIS, Bench, FlowkitStack, RedisDbs, ts  # noqa: E402

DAGS = Path(__file__).resolve().parent / "dags_sensors"
#: Busy runs kept in flight at once: enough to keep both worker processes busy between pokes.
BUSY_IN_FLIGHT = 2
SAMPLE_SECONDS = 0.25


class SensorBench(Bench):
    """A Bench that owns ONE Redis database (flowkit's broker) and flushes only that one."""

    def __init__(self, store: str, workdir: Path, redis_db: int) -> None:
        super().__init__("redis", store, workdir)
        self.dbs = RedisDbs(raw=-1, flowkit=redis_db, marker=-2)  # raw Celery is not used here

    @property
    def raw_broker_url(self) -> str:
        return f"{REDIS}/{self.dbs.flowkit}"

    def reset_services(self) -> None:
        self.flush_redis(self.dbs.flowkit)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


class Phase:
    """One stack, optionally with ``sensors`` parked sensor runs, measured for ``seconds``."""

    def __init__(self, bench: SensorBench, name: str, sensors: int, seconds: float, step_seconds: float) -> None:
        self.bench, self.sensors, self.seconds, self.step_seconds = bench, sensors, seconds, step_seconds
        logdir = bench.workdir / name
        logdir.mkdir(parents=True, exist_ok=True)
        self.landing = logdir / "landing.csv"
        self.stack = FlowkitStack(bench, name, DAGS, logdir, worker_concurrency=2)
        self.sensor_runs: list[str] = []
        self.samples: list[tuple[int, int]] = []  # (sensor pokes running, sensors parked)

    def submit(self, flow: str, params: dict[str, Any]) -> str:
        from flowkit.spec import resolve_params

        spec = self.stack.store.flow_spec(flow)
        run_id: str = self.stack.store.create_run(spec, resolve_params(spec, params), actor="bench")
        self.stack.events.publish({"type": "run_created", "run_id": run_id})
        return run_id

    def scalar(self, query: str) -> int:
        from sqlalchemy import text as sql_text

        with self.stack.store.engine.connect() as conn:
            return int(conn.execute(sql_text(query)).scalar() or 0)

    def run(self) -> dict[str, Any]:
        self.bench.reset_services()
        self.stack.prepare()
        self.stack.start_daemons()
        try:
            self._wait_busy([self.submit("bench_busy", {"seconds": self.step_seconds})], 120)  # warm-up
            if self.sensors:
                self._park_sensors()
            pokes_before = self._pokes()
            busy = self._busy_window()
            pokes = self._pokes() - pokes_before
            figures = {**busy, "sensors": self.sensors, "pokes_in_window": pokes}
            figures["pokes_per_second"] = round(pokes / self.seconds, 1)
            figures["max_sensor_pokes_running"] = max((s[0] for s in self.samples), default=0)
            figures["mean_sensors_parked"] = (
                round(statistics.fmean(s[1] for s in self.samples), 1) if self.samples else 0
            )
            if self.sensors:
                figures["all_sensors_done_after_file_s"] = self._land()
            return figures
        finally:
            self.stack.close()
            self.bench.reset_services()

    def _pokes(self) -> int:
        return self.scalar("SELECT COALESCE(SUM(sensor_pokes), 0) FROM step_runs WHERE step = 'landed'")

    def _park_sensors(self) -> None:
        for _ in range(self.sensors):
            self.sensor_runs.append(self.submit("bench_sensor", {"path": str(self.landing)}))
        deadline = time.monotonic() + 120
        q = "SELECT COUNT(*) FROM step_runs WHERE step = 'landed' AND sensor_pokes >= 1"
        while self.scalar(q) < self.sensors:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.scalar(q)} of {self.sensors} sensors poked within 120 s")
            time.sleep(0.2)

    def _busy_window(self) -> dict[str, Any]:
        """Busy runs back to back, BUSY_IN_FLIGHT at once, for ``seconds``; their figures."""
        start, done, in_flight = time.monotonic(), [], []
        poll = self.stack.ended
        next_sample = start
        while time.monotonic() - start < self.seconds:
            while len(in_flight) < BUSY_IN_FLIGHT:
                in_flight.append(self.submit("bench_busy", {"seconds": self.step_seconds}))
            for run_id in [r for r in in_flight if poll(r)]:
                in_flight.remove(run_id)
                done.append(run_id)
            if time.monotonic() >= next_sample:
                self.samples.append(self._sample())
                next_sample += SAMPLE_SECONDS
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        self._wait_busy(in_flight, 120)  # not counted: they ended after the window
        return self._busy_figures(done, elapsed)

    def _sample(self) -> tuple[int, int]:
        running = self.scalar("SELECT COUNT(*) FROM attempts WHERE step = 'landed' AND state = 'running'")
        parked = self.scalar("SELECT COUNT(*) FROM step_runs WHERE step = 'landed' AND state = 'up_for_retry'")
        return running, parked

    def _wait_busy(self, run_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for run_id in run_ids:
            while not self.stack.ended(run_id):
                if time.monotonic() > deadline:
                    self.stack.check()
                    raise RuntimeError(f"busy run {run_id} did not end within {timeout} s")
                time.sleep(0.02)

    def _busy_figures(self, run_ids: list[str], elapsed: float) -> dict[str, Any]:
        store = self.stack.store
        durations, pickups, hops = [], [], []
        for run_id in run_ids:
            run = store.get_run(run_id)
            if run["state"] != "success":
                raise RuntimeError(f"busy run {run_id} ended {run['state']}")
            durations.append(ts(run["ended_at"]) - ts(run["created_at"]))
            attempts = sorted(store.attempts(run_id), key=lambda a: ts(a["started_at"]))
            pickups += [ts(a["started_at"]) - ts(a["dispatched_at"]) for a in attempts]
            hops += [ts(b["started_at"]) - ts(a["ended_at"]) for a, b in zip(attempts, attempts[1:], strict=False)]
        steps = 5 * len(run_ids)
        return {
            "window_s": round(elapsed, 1),
            "busy_runs": len(run_ids),
            "busy_steps_per_second": round(steps / elapsed, 2),
            "busy_run_p50_s": _pct(durations, 0.5),
            "busy_run_p95_s": _pct(durations, 0.95),
            "step_pickup_p50_s": _pct(pickups, 0.5),
            "step_pickup_p95_s": _pct(pickups, 0.95),
            "hop_p50_s": _pct(hops, 0.5),
            "hop_p95_s": _pct(hops, 0.95),
        }

    def _land(self) -> float:
        """The file lands: seconds until every sensor run has succeeded."""
        start = time.monotonic()
        self.landing.write_text("landed\n")
        deadline = start + 120
        for run_id in self.sensor_runs:
            while (ended := self.stack.ended(run_id)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sensor run {run_id} did not end within 120 s of the file landing")
                time.sleep(0.05)
            if ended[0] != "success":
                raise RuntimeError(f"sensor run {run_id} ended {ended[0]}")
        return round(time.monotonic() - start, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=100, help="sensor runs parked at once (default 100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured window (default 60)")
    parser.add_argument("--step-seconds", type=float, default=0.02, help="each busy step's sleep (default 0.02)")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--redis-db", type=int, default=14, help="the Redis database to use and FLUSH (default 14)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.sensors < 1 or args.seconds <= 0:
        parser.error("--sensors must be >= 1 and --seconds > 0")
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-sensors-") as tmp:
        bench = SensorBench(args.store, Path(tmp), args.redis_db)
        try:
            phases = {
                "without_sensors": Phase(bench, "plain", 0, args.seconds, args.step_seconds).run(),
                "with_sensors": Phase(bench, "sensors", args.sensors, args.seconds, args.step_seconds).run(),
            }
        finally:
            bench.cleanup()
    report = {"sensors": args.sensors, "seconds": args.seconds, "store": args.store, "worker_concurrency": 2, **phases}
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _print(report: dict[str, Any]) -> None:
    plain, sensed = report["without_sensors"], report["with_sensors"]
    print(f"{report['sensors']} sensors poking every 1 s, {report['seconds']:g} s windows, worker -c 2")
    print(f"{'figure':<32}{'without sensors':>18}{'with sensors':>16}")
    for key in (
        "busy_runs",
        "busy_steps_per_second",
        "busy_run_p50_s",
        "busy_run_p95_s",
        "step_pickup_p50_s",
        "step_pickup_p95_s",
        "hop_p50_s",
        "hop_p95_s",
        "pokes_per_second",
        "max_sensor_pokes_running",
        "mean_sensors_parked",
    ):
        print(f"{key:<32}{plain.get(key)!s:>18}{sensed.get(key)!s:>16}")
    print(f"all sensor runs done {sensed.get('all_sensors_done_after_file_s')} s after their file landed")


if __name__ == "__main__":
    raise SystemExit(main())
