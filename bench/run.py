"""Benchmark flowkit against raw Celery doing the same work, on the same broker, in the same run.

    python bench/run.py [--broker redis|amqp] [--store sqlite|postgres] [--repeat 3]
                        [--json out.json] [--quick] [--no-chord] [--keep-logs]

Starts (each in its own process group, stopped in a ``finally``): one raw Celery worker
(``celery -A bench.raw_celery worker -c 2 --pool prefork``), one ``flowkit worker -c 2``
and one ``flowkit scheduler``, on separate queues (and, on Redis, separate databases) so
they never see each other's messages. Each scenario is timed from submit to completion
on both sides; sides alternate per repeat (raw first on even repeats, flowkit first on
odd ones) to spread the machine's noise. The figure that matters is the RATIO flowkit /
raw Celery; absolute seconds depend on the machine. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "bench" / "dags"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import bench.raw_celery`

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
#: Redis databases the bench owns and FLUSHES before and after a run: raw broker, flowkit
#: broker, markers + chord result backend. (The integration tests use database 11.)
RAW_DB, FLOWKIT_DB, MARKER_DB = 13, 14, 15
RAW_QUEUE = "bench.raw"
FK_QUEUE = "bench.flowkit"
FK_EVENTS = "bench.flowkit.events"
POLL_SECONDS = 0.02
TERMINAL = ("success", "failed", "cancelled")


class BenchError(RuntimeError):
    pass


# -- processes ----------------------------------------------------------------------------
class Daemon:
    """A subprocess in its own session/process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group we created: the daemon and its pool
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL whatever of the group is left."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # pool children that outlived their parent
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def group_cpu_seconds(pgids: list[int]) -> dict[int, float] | None:
    """user + system CPU seconds of the live processes of each process group (Linux /proc)."""
    if not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(pgids, 0.0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        pgrp = int(fields[2])
        if pgrp in out:
            out[pgrp] += (int(fields[11]) + int(fields[12])) / ticks
    return out


# -- timing helpers -----------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


@dataclass
class Sample:
    wall: float  # submit -> completion seen by the 20 ms poll (the headline figure)
    exact: float  # submit -> completion timestamp written by the last task / the scheduler
    ident: str  # run id or marker key


@dataclass
class Scenario:
    name: str
    steps: int
    flow: str  # flowkit flow measured for this row
    raw: str  # raw variant measured for this row
    samples: dict[str, list[Sample]] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="flowkit-bench-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir()
        self.daemons: list[Daemon] = []
        self.pg_name: str | None = None
        self.database_url = ""
        self.store: Any = None
        self.events: Any = None
        self.raw_clients: dict[str, Any] = {}
        self._specs: dict[str, Any] = {}
        self.failed = False
        self.cpu: dict[str, Any] = {}

    # -- setup / teardown -------------------------------------------------------------------
    def broker_urls(self) -> tuple[str, str]:
        if self.args.broker == "redis":
            return f"{REDIS}/{RAW_DB}", f"{REDIS}/{FLOWKIT_DB}"
        return AMQP, AMQP  # separate queues (and node names) on the same vhost

    def setup_store(self) -> None:
        if self.args.store == "postgres":
            import psycopg

            self.pg_name = f"flowkit_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{self.pg_name}"')
            self.database_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.pg_name}"
        else:
            self.database_url = f"sqlite:///{self.workdir / 'flowkit.db'}"

    def drop_store(self) -> None:
        if self.store is not None:
            self.store.dispose()
        if self.pg_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')

    def flush_brokers(self) -> None:
        import redis

        dbs = [MARKER_DB] + ([RAW_DB, FLOWKIT_DB] if self.args.broker == "redis" else [])
        for db in dbs:
            client = redis.Redis.from_url(f"{REDIS}/{db}")
            client.flushdb()
            client.close()
        if self.args.broker == "amqp":
            from kombu import Connection

            with Connection(AMQP, connect_timeout=5) as conn:
                channel = conn.default_channel
                for name in (RAW_QUEUE, FK_QUEUE, FK_EVENTS):
                    try:
                        channel.queue_delete(name)
                    except Exception:  # not declared yet: nothing to delete
                        channel = conn.channel()

    def env(self) -> dict[str, str]:
        raw_broker, fk_broker = self.broker_urls()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWKIT_", "BENCH_"))}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            # flowkit: defaults for everything else (FLOWKIT_SWEEP_SECONDS included)
            "FLOWKIT_DATABASE_URL": self.database_url,
            "FLOWKIT_BROKER_URL": fk_broker,
            "FLOWKIT_DAGS_FOLDER": str(DAGS),
            "FLOWKIT_DEFAULT_QUEUE": FK_QUEUE,
            "FLOWKIT_EVENTS_QUEUE": FK_EVENTS,
            # raw Celery
            "BENCH_RAW_BROKER": raw_broker,
            "BENCH_RAW_QUEUE": RAW_QUEUE,
            "BENCH_MARKER_REDIS": f"{REDIS}/{MARKER_DB}",
            "BENCH_RESULT_REDIS": f"{REDIS}/{MARKER_DB}",
        })
        return env

    def start(self) -> None:
        self.setup_store()
        env = self.env()
        os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_")})  # for raw_celery
        up = subprocess.run([sys.executable, "-m", "flowkit.cli", "db", "upgrade"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            raise BenchError(f"flowkit db upgrade failed:\n{up.stdout}\n{up.stderr}")
        from flowkit.store.sql import SqlStore
        from flowkit.sync import sync_dags

        self.store = SqlStore(self.database_url)
        report = sync_dags(self.store, str(DAGS))
        if report.errors:
            raise BenchError(f"bench/dags does not load: {report.errors}")
        self.flush_brokers()

        py = sys.executable
        self.daemons.append(Daemon("raw-worker", [
            py, "-m", "celery", "-A", "bench.raw_celery", "worker", "-c", "2", "--pool", "prefork",
            "-Q", RAW_QUEUE, "-n", "bench-raw@%h", "-E", "--without-gossip", "--without-mingle",
            "--loglevel=INFO"], env, self.logdir))
        self.daemons.append(Daemon("flowkit-worker", [
            py, "-m", "flowkit.cli", "worker", "-c", "2", "-n", "bench-flowkit@%h"], env, self.logdir))
        self.daemons.append(Daemon("flowkit-scheduler", [py, "-m", "flowkit.cli", "scheduler"],
                                   env, self.logdir))

        # Clients, in this process.
        from bench import raw_celery
        from flowkit.celery_app import make_app
        from flowkit.config import Settings
        from flowkit.dispatch.events import BrokerEvents

        raw_broker, _ = self.broker_urls()
        self.raw_clients = {
            "lean": raw_celery.make_app(raw_broker),
            "chord": raw_celery.make_app(raw_broker, result_backend=f"{REDIS}/{MARKER_DB}"),
        }
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("FLOWKIT_")})
        self.events = BrokerEvents(make_app(settings), settings.events_queue)
        import redis

        self.marker = redis.Redis.from_url(f"{REDIS}/{MARKER_DB}")

    def stop(self) -> None:
        # Scheduler first (it would otherwise dispatch into a stopping worker), then workers.
        for d in reversed(self.daemons):
            try:
                d.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {d.name} (pid {d.pid}): {exc}", file=sys.stderr)
        import gc

        gc.collect()  # chord AsyncResults unsubscribe now, not at interpreter exit
        for client in self.raw_clients.values():
            client.close()
        if self.events is not None:
            self.events.close()
            self.events.app.close()

    def cleanup(self) -> None:
        steps: list[Callable[[], None]] = [self.stop, self.drop_store, self.flush_brokers]
        for step in steps:
            try:
                step()
            except Exception as exc:
                print(f"warning: cleanup {step.__name__}: {exc}", file=sys.stderr)
        if self.failed or self.args.keep_logs:
            print(f"logs kept in {self.logdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- one measured run ---------------------------------------------------------------------
    def _check_daemons(self) -> None:
        for d in self.daemons:
            if not d.alive():
                raise BenchError(f"{d.name} (pid {d.pid}) exited {d.proc.returncode}:\n{d.tail()}")

    def _wait(self, poll: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.perf_counter() + timeout
        while True:
            value = poll()
            if value:
                return value
            if time.perf_counter() > deadline:
                self._check_daemons()
                tails = "\n".join(f"===== {d.name} =====\n{d.tail()}" for d in self.daemons)
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
            time.sleep(POLL_SECONDS)

    def run_raw(self, variant: str, size: int, timeout: float) -> Sample:
        from bench import raw_celery

        submit = {"chain": raw_celery.submit_chain, "fanout": raw_celery.submit_fanout,
                  "fanout_chord": raw_celery.submit_fanout_chord}[variant]
        client = self.raw_clients["chord" if variant == "fanout_chord" else "lean"]
        key = f"bench:{variant}:{uuid.uuid4().hex}"
        t0_wall, t0 = time.time(), time.perf_counter()
        submit(client, key, size)
        done = self._wait(lambda: self.marker.get(key), timeout, f"raw {variant} ({key})")
        wall = time.perf_counter() - t0
        return Sample(wall=wall, exact=float(done) - t0_wall, ident=key)

    def _run_state(self, run_id: str) -> tuple[str, Any] | None:
        run = self.store.get_run(run_id)
        return (run["state"], run["ended_at"]) if run["state"] in TERMINAL else None

    def run_flowkit(self, flow: str, timeout: float) -> Sample:
        spec = self._specs.get(flow) or self._specs.setdefault(flow, self.store.flow_spec(flow))
        t0_wall, t0 = time.time(), time.perf_counter()
        # What `flowkit trigger` does, minus the CLI start-up and the dags sync.
        run_id = self.store.create_run(spec, {}, actor="bench", trigger="manual", reason="bench")
        self.events.publish({"type": "run_created", "run_id": run_id})
        state, ended = self._wait(lambda: self._run_state(run_id), timeout, f"flowkit run {run_id} of {flow}")
        wall = time.perf_counter() - t0
        if state != "success":
            raise BenchError(f"flowkit run {run_id} of {flow} ended {state}")
        return Sample(wall=wall, exact=_ts(ended) - t0_wall, ident=run_id)

    # -- the benchmark --------------------------------------------------------------------------
    def scenarios(self) -> list[Scenario]:
        quick = self.args.quick
        n, m = (5, 5) if quick else (20, 40)
        chain_flow, fan_flow = ("bench_chain_quick", "bench_fanout_quick") if quick else ("bench_chain", "bench_fanout")
        out = [Scenario("chain", n, chain_flow, "chain"), Scenario("fanout", m + 2, fan_flow, "fanout")]
        if not self.args.no_chord:
            out.append(Scenario("fanout (raw: chord)", m + 2, fan_flow, "fanout_chord"))
        return out

    def measure(self) -> list[Scenario]:
        scenarios = self.scenarios()
        raw_runs: dict[str, tuple[str, int]] = {}
        for s in scenarios:
            raw_runs.setdefault(s.raw, (s.raw, s.steps - 2 if s.raw.startswith("fanout") else s.steps))
        flows = sorted({s.flow for s in scenarios})
        raw_samples: dict[str, list[Sample]] = {k: [] for k in raw_runs}
        fk_samples: dict[str, list[Sample]] = {f: [] for f in flows}

        # Warm-up (also waits for the daemons to be up): every raw variant, every flow, once.
        first = 120.0
        for variant, size in raw_runs.values():
            self.run_raw(variant, size, first)
        for flow in flows:
            self.run_flowkit(flow, first)
        print(f"warm-up done ({'quick, ' if self.args.quick else ''}{self.args.repeat} repeats)",
              file=sys.stderr)

        timeout = self.args.timeout
        cpu_before = group_cpu_seconds([d.pid for d in self.daemons])
        groups = [("chain", [s for s in scenarios if s.name == "chain"]),
                  ("fanout", [s for s in scenarios if s.name != "chain"])]
        for rep in range(self.args.repeat):
            order = ["raw", "flowkit"] if rep % 2 == 0 else ["flowkit", "raw"]
            for _, members in groups:
                for side in order:
                    if side == "raw":
                        for variant in dict.fromkeys(s.raw for s in members):
                            _, size = raw_runs[variant]
                            raw_samples[variant].append(self.run_raw(variant, size, timeout))
                    else:
                        for flow in dict.fromkeys(s.flow for s in members):
                            fk_samples[flow].append(self.run_flowkit(flow, timeout))
            print(f"repeat {rep + 1}/{self.args.repeat} done", file=sys.stderr)
        cpu_after = group_cpu_seconds([d.pid for d in self.daemons])
        for s in scenarios:
            s.samples = {"raw": raw_samples[s.raw], "flowkit": fk_samples[s.flow]}
        if cpu_before and cpu_after:
            used = {d.name: cpu_after[d.pid] - cpu_before[d.pid] for d in self.daemons}
            raw_steps = sum(len(v) * (size + 2 if variant.startswith("fanout") else size)
                            for variant, (_, size) in raw_runs.items() for v in [raw_samples[variant]])
            fk_steps = sum(len(fk_samples[f]) * next(s.steps for s in scenarios if s.flow == f) for f in flows)
            self.cpu = {
                "cpu_s": {k: round(v, 3) for k, v in used.items()}, "raw_steps": raw_steps,
                "flowkit_steps": fk_steps,
                "raw_worker_ms_per_step": used["raw-worker"] / raw_steps * 1000,
                "flowkit_worker_ms_per_step": used["flowkit-worker"] / fk_steps * 1000,
                "flowkit_scheduler_ms_per_step": used["flowkit-scheduler"] / fk_steps * 1000,
            }
        return scenarios

    # -- where flowkit's time goes (from the store's own timestamps) -----------------------------
    def breakdown(self, scenario: Scenario) -> dict[str, float]:
        """Median ms of each segment of a chain hop, over every measured chain run."""
        segs: dict[str, list[float]] = {"submit -> first dispatch": [], "finish -> next dispatch": [],
                                        "dispatch -> claim": [], "claim -> finish": [],
                                        "last finish -> run success": []}
        for sample in scenario.samples["flowkit"]:
            run = self.store.get_run(sample.ident)
            atts = {a["step"]: a for a in self.store.attempts(sample.ident)}
            order = [f"s{i:02d}" for i in range(scenario.steps)]
            segs["submit -> first dispatch"].append(_ts(atts[order[0]]["dispatched_at"]) - _ts(run["created_at"]))
            for prev, cur in zip(order, order[1:], strict=False):
                segs["finish -> next dispatch"].append(
                    _ts(atts[cur]["dispatched_at"]) - _ts(atts[prev]["ended_at"]))
            for name in order:
                a = atts[name]
                segs["dispatch -> claim"].append(_ts(a["started_at"]) - _ts(a["dispatched_at"]))
                segs["claim -> finish"].append(_ts(a["ended_at"]) - _ts(a["started_at"]))
            segs["last finish -> run success"].append(_ts(run["ended_at"]) - _ts(atts[order[-1]]["ended_at"]))
        return {k: round(median(v) * 1000, 2) for k, v in segs.items()}


# -- report ---------------------------------------------------------------------------------------
def summarize(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    rows = []
    for s in scenarios:
        raw = median([x.wall for x in s.samples["raw"]])
        fk = median([x.wall for x in s.samples["flowkit"]])
        raw_x = median([x.exact for x in s.samples["raw"]])
        fk_x = median([x.exact for x in s.samples["flowkit"]])
        rows.append({
            "scenario": s.name, "steps": s.steps, "flow": s.flow, "raw_variant": s.raw,
            "raw_median_s": raw, "flowkit_median_s": fk, "ratio": fk / raw,
            "overhead_ms_per_step": (fk - raw) / s.steps * 1000,
            "raw_exact_median_s": raw_x, "flowkit_exact_median_s": fk_x, "ratio_exact": fk_x / raw_x,
            "raw_samples_s": [round(x.wall, 4) for x in s.samples["raw"]],
            "flowkit_samples_s": [round(x.wall, 4) for x in s.samples["flowkit"]],
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    headers = ["scenario", "steps", "raw celery median s", "flowkit median s", "ratio",
               "flowkit overhead ms/step", "ratio (timestamps)"]
    body = [[r["scenario"], str(r["steps"]), f"{r['raw_median_s']:.3f}", f"{r['flowkit_median_s']:.3f}",
             f"{r['ratio']:.1f}x", f"{r['overhead_ms_per_step']:.1f}", f"{r['ratio_exact']:.1f}x"]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for b in body:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    import celery
    import kombu
    import sqlalchemy

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "celery": celery.__version__, "kombu": kombu.__version__, "sqlalchemy": sqlalchemy.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per scenario and side (median)")
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="N=5, M=5, repeat 1 (about 30 s)")
    parser.add_argument("--no-chord", action="store_true", help="skip the raw chord baseline")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one timed run may take")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemons' logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    bench = Bench(args)
    try:
        bench.start()
        scenarios = bench.measure()
        rows = summarize(scenarios)
        chain = next(s for s in scenarios if s.name == "chain")
        hops = bench.breakdown(chain)
    except BaseException:
        bench.failed = True
        raise
    finally:
        bench.cleanup()
    elapsed = time.perf_counter() - started

    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info = machine()
    print(f"\nflowkit vs raw Celery: broker {args.broker}, store {args.store}, "
          f"{args.repeat} repeat(s), {when}, {info['cpus']} CPUs, total {elapsed:.0f} s")
    print(table(rows))
    raw_hop = rows[0]["raw_median_s"] / chain.steps * 1000
    print(f"\nchain hop, flowkit (median ms, from the store's timestamps; raw Celery: "
          f"{raw_hop:.1f} ms per hop on average):")
    for k, v in hops.items():
        print(f"  {k:<28} {v:8.2f}")
    if bench.cpu:
        c = bench.cpu
        print(f"\nCPU per step during the timed runs (daemons only; PostgreSQL/Redis/RabbitMQ not counted): "
              f"raw worker {c['raw_worker_ms_per_step']:.1f} ms; flowkit worker "
              f"{c['flowkit_worker_ms_per_step']:.1f} ms + scheduler {c['flowkit_scheduler_ms_per_step']:.1f} ms")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({
            "date": when, "machine": info, "broker": args.broker, "store": args.store,
            "repeat": args.repeat, "quick": args.quick, "elapsed_s": round(elapsed, 1),
            "rows": rows, "chain_hop_ms": hops, "raw_chain_hop_ms": raw_hop, "cpu": bench.cpu,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
