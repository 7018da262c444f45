"""What every benchmark shape runs on: services, daemons, submitting and waiting.

Each shape gets an environment of its own (``ShapeEnv``): a fresh store (a new
PostgreSQL database or SQLite file), its own flowkit queues, a dags folder holding only
the shape's flows, and freshly started daemons (one raw Celery worker, one
``flowkit worker`` and one ``flowkit scheduler``), all stopped and deleted when the
shape ends. So a run that timed out cannot slow down the next shape, and the
scheduler's peak memory belongs to one shape.

The bench relies only on flowkit's CLI (``db upgrade``, ``scheduler``, ``worker``,
``pools set``), ``SqlStore`` (``create_run``, ``get_run``, ``attempts``, ``step_runs``,
``flow_spec``), ``sync_dags`` and ``BrokerEvents.publish``, so it keeps working while
the engine behind them changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import bench.raw_celery`, `bench.flows`

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
POLL_SECONDS = 0.02
TERMINAL = ("success", "failed", "cancelled")
#: kombu's Redis transport keeps priority n > 0 of queue q in the list q + SEP + str(n).
REDIS_PRIORITY_SEP = "\x06\x16"


class BenchError(RuntimeError):
    pass


class RunTimedOut(BenchError):
    """A measured run did not end within its shape's timeout (reported, not fatal)."""

    def __init__(self, seconds: float, what: str) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {what}")
        self.seconds = seconds


class DagsDoNotLoad(BenchError):
    """The shape's dags folder does not load into this build of flowkit."""


@dataclass(frozen=True)
class RedisDbs:
    """The Redis databases the bench owns and FLUSHES before and after every shape."""

    raw: int  # raw Celery's broker
    flowkit: int  # flowkit's broker
    marker: int  # raw Celery's markers, counters and chord result backend

    @classmethod
    def from_env(cls) -> RedisDbs:
        text = os.environ.get("BENCH_REDIS_DBS", "13,14,15")
        try:
            raw, flowkit, marker = (int(x) for x in text.split(","))
        except ValueError:
            raise BenchError(f"BENCH_REDIS_DBS={text!r}: give three database numbers, like 13,14,15") from None
        if len({raw, flowkit, marker}) != 3:
            raise BenchError(f"BENCH_REDIS_DBS={text!r}: the three databases must differ")
        return cls(raw, flowkit, marker)


# -- processes ----------------------------------------------------------------------------
class Daemon:
    """A subprocess in its own session/process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

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
        if not self._log.closed:
            self._log.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                yield int(entry), f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue


def group_cpu_seconds(pgids: list[int]) -> dict[int, float] | None:
    """user + system CPU seconds of each process group (Linux /proc).

    Counts the live processes of the group, plus the children they have already reaped
    (cutime/cstime), so a pool child or loader subprocess that exits mid-run still counts.
    """
    if not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(pgids, 0.0)
    for _pid, fields in proc_stats():
        pgrp = int(fields[2])
        if pgrp in out:
            out[pgrp] += sum(int(x) for x in fields[11:15]) / ticks  # utime stime cutime cstime
    return out


def rss_mb(pid: int, field: str = "VmHWM") -> float | None:
    """A memory figure of the process from /proc/PID/status, in MB: VmHWM (the peak resident
    set size since the process started) by default, or VmRSS (now). None where /proc has none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def ts(value: Any) -> float:
    """A store timestamp (aware, naive-UTC or ISO text) as seconds since the epoch."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


@dataclass
class Sample:
    wall: float  # submit -> completion seen by the 20 ms poll (the headline figure)
    exact: float  # submit -> completion timestamp written by the last task / the scheduler
    ident: str  # run id or marker key


def wait_for(
    poll: Callable[[], Any], timeout: float, what: str, check: Callable[[], None], interval: float = POLL_SECONDS
) -> Any:
    """Poll until ``poll()`` is truthy; RunTimedOut after ``timeout`` s (``check`` first)."""
    deadline = time.perf_counter() + timeout
    while True:
        value = poll()
        if value:
            return value
        if time.perf_counter() > deadline:
            check()  # a dead daemon is a failure of the bench, not a slow engine
            raise RunTimedOut(timeout, what)
        time.sleep(interval)


# -- the whole bench ----------------------------------------------------------------------
class Bench:
    """Bench-wide settings and the services the shapes share (Redis databases, RabbitMQ)."""

    def __init__(self, broker: str, store: str, workdir: Path) -> None:
        self.broker = broker
        self.store_kind = store
        self.workdir = workdir
        self.dbs = RedisDbs.from_env()
        #: Random per bench run: two benches on one RabbitMQ never share a queue or a node name.
        self.suffix = uuid.uuid4().hex[:8]
        self.raw_queue = f"bench.raw.{self.suffix}"
        self.problems = False  # a shape failed or timed out: keep the logs
        self._flowkit_app: Any = None
        # Everything started or created, so ``cleanup`` can end it even if a shape's own
        # cleanup was cut short (say, by a second signal).
        self.daemons: list[Daemon] = []
        self.databases: set[str] = set()
        # raw_celery reads these when imported; the dags loader's subprocesses need ROOT on
        # their path to import bench.flows.
        os.environ.update(
            {
                "BENCH_RAW_BROKER": self.raw_broker_url,
                "BENCH_RAW_QUEUE": self.raw_queue,
                "BENCH_MARKER_REDIS": f"{REDIS}/{self.dbs.marker}",
                "BENCH_RESULT_REDIS": f"{REDIS}/{self.dbs.marker}",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            }
        )

    def flowkit_client_app(self) -> Any:
        """The Celery app the bench publishes flowkit events with, shared by every shape.

        One per bench: flowkit registers its task as a Celery shared task, so a second app
        in this process would warn about a duplicate task name. Events only need the
        broker connection, which is the same for every shape.
        """
        if self._flowkit_app is None:
            from flowkit.config import Settings
            from flowkit.execution.celery_app import make_app

            self._flowkit_app = make_app(Settings(broker_url=self.flowkit_broker_url, database_url="sqlite://"))
        return self._flowkit_app

    def spawn(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Daemon:
        daemon = Daemon(name, argv, env, logdir)
        self.daemons.append(daemon)
        return daemon

    def create_database(self, name: str) -> str:
        """Create a PostgreSQL database for one shape; returns its URL."""
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.databases.add(name)
        return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.discard(name)

    def cleanup(self) -> None:
        """The last line of defence, at exit: stop every daemon and drop every database left."""
        for daemon in self.daemons:
            if daemon.alive():
                print(f"warning: {daemon.name} (pid {daemon.pid}) still running at exit; stopping it", file=sys.stderr)
            daemon.stop()  # also SIGKILLs a group whose leader already exited
        for name in sorted(self.databases):
            try:
                self.drop_database(name)
            except Exception as exc:
                print(f"warning: dropping database {name}: {exc}", file=sys.stderr)
        try:
            self.reset_services()
        except Exception as exc:
            print(f"warning: emptying the brokers: {exc}", file=sys.stderr)
        if self._flowkit_app is not None:
            self._flowkit_app.close()
            self._flowkit_app = None

    @property
    def raw_broker_url(self) -> str:
        return f"{REDIS}/{self.dbs.raw}" if self.broker == "redis" else AMQP

    @property
    def flowkit_broker_url(self) -> str:
        return f"{REDIS}/{self.dbs.flowkit}" if self.broker == "redis" else AMQP

    def base_env(self) -> dict[str, str]:
        """The daemons' environment: ours minus FLOWKIT_* (each stack sets its own)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def flush_redis(self, *which: int) -> None:
        import redis

        for db in which:
            client = redis.Redis.from_url(f"{REDIS}/{db}")
            client.flushdb()
            client.close()

    def delete_amqp_queues(self, names: list[str]) -> None:
        from kombu import Connection

        with Connection(AMQP, connect_timeout=5) as conn:
            channel = conn.channel()
            for name in names:
                try:
                    channel.queue_delete(name)
                except Exception:  # never declared: nothing to delete (the channel is closed)
                    channel = conn.channel()

    def reset_services(self) -> None:
        """Empty everything the bench owns on the brokers (before and after each shape)."""
        self.flush_redis(self.dbs.marker, *((self.dbs.raw, self.dbs.flowkit) if self.broker == "redis" else ()))
        if self.broker == "amqp":
            self.delete_amqp_queues([self.raw_queue])


class RawSide:
    """One raw Celery worker and its clients, for one shape."""

    def __init__(self, bench: Bench, logdir: Path) -> None:
        from bench import raw_celery

        self.bench = bench
        py = sys.executable
        self.daemon = bench.spawn(
            "raw-worker",
            [
                py,
                "-m",
                "celery",
                "-A",
                "bench.raw_celery",
                "worker",
                "-c",
                "2",
                "--pool",
                "prefork",
                "-Q",
                bench.raw_queue,
                "-n",
                f"bench-raw-{bench.suffix}@%h",
                "-E",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            bench.base_env(),
            logdir,
        )
        self.clients = {
            "lean": raw_celery.make_app(bench.raw_broker_url),
            "chord": raw_celery.make_app(bench.raw_broker_url, result_backend=f"{REDIS}/{bench.dbs.marker}"),
        }
        import redis

        self.marker = redis.Redis.from_url(f"{REDIS}/{bench.dbs.marker}")

    def check(self) -> None:
        if not self.daemon.alive():
            raise BenchError(
                f"raw worker (pid {self.daemon.pid}) exited {self.daemon.proc.returncode}:\n{self.daemon.tail()}"
            )

    def run(self, variant: str, size: int, timeout: float) -> Sample:
        """Submit one raw canvas and wait for its completion marker."""
        from bench import raw_celery

        submit = {
            "chain": raw_celery.submit_chain,
            "timed_chain": raw_celery.submit_timed_chain,
            "fanout": raw_celery.submit_fanout,
            "fanout_chord": raw_celery.submit_fanout_chord,
            "group": raw_celery.submit_group,
        }[variant]
        client = self.clients["chord" if variant == "fanout_chord" else "lean"]
        key = f"bench:{variant}:{uuid.uuid4().hex}"
        t0_wall, t0 = time.time(), time.perf_counter()
        submit(client, key, size)
        done = wait_for(lambda: self.marker.get(key), timeout, f"raw {variant} of {size}", self.check)
        wall = time.perf_counter() - t0
        return Sample(wall=wall, exact=float(done) - t0_wall, ident=key)

    def chain_ends(self, key: str) -> list[float]:
        from bench import raw_celery

        return raw_celery.chain_ends(self.marker, key)

    def cpu(self) -> float | None:
        used = group_cpu_seconds([self.daemon.pid])
        return used[self.daemon.pid] if used else None

    def close(self) -> None:
        self.daemon.stop()
        import gc

        gc.collect()  # chord AsyncResults unsubscribe now, not at interpreter exit
        for client in self.clients.values():
            client.close()
        self.marker.close()


class FlowkitStack:
    """A store, queues, dags folder, worker and scheduler of one shape.

    ``prepare`` creates the store and loads the dags folder; ``start_daemons`` starts the
    worker and scheduler. Between the two a shape may run CLI commands (``cli``).
    """

    def __init__(
        self,
        bench: Bench,
        name: str,
        dags_folder: Path,
        logdir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        worker_concurrency: int = 2,
    ) -> None:
        self.bench = bench
        self.name = name
        self.dags_folder = dags_folder
        self.logdir = logdir
        self.extra_env = extra_env or {}
        self.worker_concurrency = worker_concurrency
        self.queue = f"bench.flowkit.{bench.suffix}.{name}"
        self.events_queue = f"{self.queue}.events"
        self.daemons: list[Daemon] = []
        self.pg_name: str | None = None
        self.database_url = ""
        self.store: Any = None
        self.events: Any = None
        self._specs: dict[str, Any] = {}
        self._poll: RunStatePoll | None = None
        self.last_run_id: str | None = None  # a shape that times out reports this run's progress

    # -- lifecycle ------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = self.bench.base_env()
        env.update(
            {
                # flowkit: defaults for everything else (FLOWKIT_SWEEP_SECONDS included)
                "FLOWKIT_DATABASE_URL": self.database_url,
                "FLOWKIT_BROKER_URL": self.bench.flowkit_broker_url,
                "FLOWKIT_DAGS_FOLDER": str(self.dags_folder),
                "FLOWKIT_DEFAULT_QUEUE": self.queue,
                "FLOWKIT_EVENTS_QUEUE": self.events_queue,
            }
        )
        env.update(self.extra_env)
        return env

    def prepare(self, setup: tuple[list[str], ...] | list[list[str]] = ()) -> None:
        """Create the store, run the ``setup`` CLI commands (e.g. ``pools set``), load the dags.

        Setup comes before the dags load, so a flow that names a pool finds it there."""
        if self.bench.store_kind == "postgres":
            self.pg_name = f"flowkit_bench_{self.bench.suffix}_{self.name}"
            self.database_url = self.bench.create_database(self.pg_name)
        else:
            self.database_url = f"sqlite:///{self.logdir / 'flowkit.db'}"
        up = self.cli(["db", "upgrade"], timeout=120)
        if up.returncode != 0:
            raise BenchError(f"flowkit db upgrade failed:\n{up.stdout}\n{up.stderr}")
        for args in setup:
            made = self.cli(args)
            if made.returncode != 0:
                why = (made.stderr or made.stdout).strip().splitlines()[-1:] or [f"exit {made.returncode}"]
                raise DagsDoNotLoad(f"`flowkit {' '.join(args)}` failed: {why[0]}")
        from flowkit.loading.sync import sync_dags
        from flowkit.store.sql import SqlStore

        self.store = SqlStore(self.database_url)
        report = sync_dags(self.store, str(self.dags_folder), timeout=120)
        if report.errors:
            raise DagsDoNotLoad("; ".join(str(e) for e in report.errors))

    def cli(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``flowkit ARGS`` against this stack's store and broker."""
        return subprocess.run(
            [sys.executable, "-m", "flowkit.cli", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_daemons(self) -> None:
        py, env = sys.executable, self.env()
        self.daemons.append(
            self.bench.spawn(
                "flowkit-worker",
                [
                    py,
                    "-m",
                    "flowkit.cli",
                    "worker",
                    "-c",
                    str(self.worker_concurrency),
                    "-n",
                    f"bench-flowkit-{self.bench.suffix}-{self.name}@%h",
                ],
                env,
                self.logdir,
            )
        )
        self.daemons.append(
            self.bench.spawn("flowkit-scheduler", [py, "-m", "flowkit.cli", "scheduler"], env, self.logdir)
        )
        from flowkit.dispatch.events import BrokerEvents

        self.events = BrokerEvents(self.bench.flowkit_client_app(), self.events_queue)

    @property
    def worker(self) -> Daemon:
        return self.daemons[0]

    @property
    def scheduler(self) -> Daemon:
        return self.daemons[1]

    def close(self) -> None:
        # Scheduler first (it would otherwise dispatch into a stopping worker), then the worker.
        for d in reversed(self.daemons):
            try:
                d.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {d.name} (pid {d.pid}): {exc}", file=sys.stderr)
        if self.events is not None:
            self.events.close()
        if self._poll is not None:
            self._poll.close()
        if self.store is not None:
            self.store.dispose()
        if self.pg_name:
            self.bench.drop_database(self.pg_name)
        if self.bench.broker == "amqp":
            self.bench.delete_amqp_queues([self.queue, self.events_queue])

    # -- runs ---------------------------------------------------------------------------------
    def check(self) -> None:
        for d in self.daemons:
            if not d.alive():
                raise BenchError(f"{d.name} (pid {d.pid}) exited {d.proc.returncode}:\n{d.tail()}")

    def submit(self, flow: str) -> str:
        """What ``flowkit trigger`` does, minus the CLI start-up and the dags sync."""
        spec = self._specs.get(flow) or self._specs.setdefault(flow, self.store.flow_spec(flow))
        from flowkit.spec import resolve_params

        run_id: str = self.store.create_run(
            spec, resolve_params(spec, {}), actor="bench", trigger="manual", reason="bench"
        )
        self.events.publish({"type": "run_created", "run_id": run_id})
        return run_id

    def ended(self, run_id: str) -> tuple[str, Any] | None:
        """The run's (state, ended_at) once it has ended, else None: what the 20 ms poll asks."""
        if self._poll is None:
            self._poll = RunStatePoll(self.database_url)
        row = self._poll(run_id)
        return row if row is not None and row[0] in TERMINAL else None

    def run(self, flow: str, timeout: float) -> Sample:
        """Submit one run of ``flow`` and wait until it succeeds."""
        t0_wall, t0 = time.time(), time.perf_counter()
        run_id = self.submit(flow)
        self.last_run_id = run_id
        state, ended = wait_for(lambda: self.ended(run_id), timeout, f"flowkit run {run_id} of {flow}", self.check)
        wall = time.perf_counter() - t0
        if state != "success":
            raise BenchError(f"flowkit run {run_id} of {flow} ended {state}")
        return Sample(wall=wall, exact=ts(ended) - t0_wall, ident=run_id)

    def cpu(self) -> dict[str, float] | None:
        used = group_cpu_seconds([d.pid for d in self.daemons])
        return {d.name: used[d.pid] for d in self.daemons} if used else None

    def queue_depth_probe(self) -> QueueDepthProbe:
        return QueueDepthProbe(self.bench, self.queue)


class RunStatePoll:
    """A run's state and end, read the cheapest way the store allows: one prepared SELECT on
    a connection of its own. The raw side polls a Redis GET; through ``SqlStore.get_run``
    (SQLAlchemy, the whole row, its params decoded) each poll cost the flowkit side about
    0.5 ms of the bench's and the database's CPU, on the two cores both sides share."""

    SQL = "SELECT state, ended_at FROM runs WHERE id = "

    def __init__(self, database_url: str) -> None:
        self._pg: Any = None
        self._sqlite: Any = None
        if database_url.startswith("postgresql"):
            import psycopg

            self._pg = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        else:
            import sqlite3

            self._sqlite = sqlite3.connect(
                f"file:{database_url.split('///', 1)[1]}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )

    def __call__(self, run_id: str) -> tuple[str, Any] | None:
        if self._pg is not None:
            row = self._pg.execute(self.SQL + "%s", (run_id,), prepare=True).fetchone()
        else:
            row = self._sqlite.execute(self.SQL + "?", (run_id,)).fetchone()
        return (row[0], row[1]) if row is not None else None

    def close(self) -> None:
        for conn in (self._pg, self._sqlite):
            if conn is not None:
                conn.close()


class QueueDepthProbe:
    """Counts the messages waiting in one task queue (call it; close it when done).

    Redis: LLEN of the queue's list and of its priority sub-lists. AMQP: a passive
    queue_declare's message_count. Either way, messages a worker has reserved but not
    acknowledged are not counted: they have left the queue.
    """

    def __init__(self, bench: Bench, queue: str) -> None:
        self.queue = queue
        self._redis: Any = None
        self._amqp: Any = None
        if bench.broker == "redis":
            import redis

            self._redis = redis.Redis.from_url(bench.flowkit_broker_url)
            self._keys = [queue] + [f"{queue}{REDIS_PRIORITY_SEP}{n}" for n in range(1, 10)]
        else:
            from kombu import Connection

            self._amqp = Connection(AMQP, connect_timeout=5)
            self._channel = self._amqp.channel()

    def __call__(self) -> int:
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=False)
            for key in self._keys:
                pipe.llen(key)
            return int(sum(pipe.execute()))
        try:
            return int(self._channel.queue_declare(queue=self.queue, passive=True).message_count)
        except Exception:  # not declared yet (nothing dispatched): the channel closed, reopen it
            self._channel = self._amqp.channel()
            return 0

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._amqp is not None:
            self._amqp.release()


class ShapeEnv:
    """Everything one shape runs on; ``close`` stops and deletes all of it."""

    def __init__(
        self,
        bench: Bench,
        name: str,
        dags_folder: Path,
        *,
        raw: bool,
        extra_env: dict[str, str] | None = None,
        worker_concurrency: int = 2,
    ) -> None:
        self.bench = bench
        self.logdir = bench.workdir / name
        self.logdir.mkdir(parents=True, exist_ok=True)
        bench.reset_services()
        self.raw: RawSide | None = None
        self.flowkit = FlowkitStack(
            bench, name, dags_folder, self.logdir, extra_env=extra_env, worker_concurrency=worker_concurrency
        )
        if raw:
            try:
                self.raw = RawSide(bench, self.logdir)
            except BaseException:  # its worker may have started: nobody else would stop it
                self.close()
                raise

    def cpu(self) -> dict[str, float]:
        out = dict(self.flowkit.cpu() or {})
        if self.raw is not None:
            raw = self.raw.cpu()
            if raw is not None:
                out["raw-worker"] = raw
        return out

    def close(self) -> None:
        steps: list[Callable[[], None]] = [self.flowkit.close]
        if self.raw is not None:
            steps.append(self.raw.close)
        steps.append(self.bench.reset_services)
        for step in steps:
            try:
                step()
            except Exception as exc:
                print(f"warning: cleanup of {self.logdir.name}: {exc}", file=sys.stderr)
