"""Processes and servers of the fault-injection suite: flowkit daemons, a Redis server and a
PostgreSQL cluster of its own, and queue cleanup on the shared RabbitMQ.

Everything is started in its own session / process group and stopped by PID or process
group (or ``pg_ctl`` on the suite's own data directory): the shared services on this
machine are never stopped or restarted.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "bench" / "fault_dags"
AMQP = os.environ.get("FAULTS_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
FLOW = "faultflow"
RUN_TERMINAL = ("success", "failed", "cancelled")
#: After the run ends, wait this long for late executions (a redelivered duplicate).
SETTLE_SECONDS = 3.0


class InfraError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# -- flowkit daemons --------------------------------------------------------------------------
class Daemon:
    """``python -m flowkit.cli ARGS`` in its own process group, output to ``<logdir>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.time()
        self.stopped_by_signal = False  # SIGSTOPped: only SIGKILL ends it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group_pids(self) -> list[int]:
        """Live processes of this daemon's process group (the worker and its pool children)."""
        from bench.harness import proc_stats

        return sorted(pid for pid, fields in proc_stats() if int(fields[2]) == self.pid and fields[0] != "Z")

    def signal_group(self, sig: int) -> None:
        _signal_group(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a machine dying) and reap the daemon."""
        self.signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout`` s (or at once if SIGSTOPped)."""
        if self.alive() and not self.stopped_by_signal:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # what is left, pool children included
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# -- Redis --------------------------------------------------------------------------------------
class RedisServer:
    """A redis-server of the suite's own on a free port; ``persistent`` turns on the AOF."""

    def __init__(self, workdir: Path, *, persistent: bool = False, binary: str = "redis-server") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistent = persistent
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
        ]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        return argv

    def start(self, timeout: float = 15.0) -> None:
        self._log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise InfraError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.log'}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: a clean shutdown (with the AOF on, it is flushed first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None and not self._log.closed:
            self._log.close()


# -- PostgreSQL -----------------------------------------------------------------------------------
def pg_bindir() -> Path:
    env = os.environ.get("FAULTS_PG_BIN")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).parent
    raise InfraError("no pg_ctl found: install PostgreSQL's server package or set FAULTS_PG_BIN")


class PgCluster:
    """A PostgreSQL cluster of the suite's own: data dir and unix socket in a temp dir, a free
    port on 127.0.0.1, trust auth. As root it runs as the ``postgres`` OS user."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="flowkit-faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)

    def _run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, start_new_session=True
        )
        if proc.returncode != 0:
            raise InfraError(f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-o", opts, "-w", "-t", "60", "start"
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.data.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            except (InfraError, subprocess.TimeoutExpired):
                pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)


# -- RabbitMQ -------------------------------------------------------------------------------------
def amqp_delete(url: str, queues: list[str]) -> list[str]:
    """Delete the run's queues (and Celery's same-named direct exchanges) on the shared broker."""
    from kombu import Connection

    deleted = []
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in queues:
            for kind in ("queue", "exchange"):
                try:
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                    deleted.append(f"{kind} {name}")
                except Exception:  # not declared: the channel is closed by the broker
                    channel = conn.channel()
    return deleted


def declare_amqp_queue(url: str, name: str) -> None:
    """A durable queue on the default exchange, routing key = its name (as flowkit's events)."""
    from kombu import Connection, Queue

    with Connection(url, connect_timeout=5) as conn:
        Queue(name, routing_key=name, durable=True)(conn.default_channel).declare()


# -- one scenario's cluster -------------------------------------------------------------------------
class Cluster:
    """Broker, database and daemons of one scenario (or of the soak)."""

    def __init__(self, name: str, workdir: Path, pg: PgCluster, broker: str, *, redis_persistent: bool = False) -> None:
        self.name = name
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pg = pg
        self.broker = broker
        self.suffix = uuid.uuid4().hex[:8]
        self.db_name = f"faults_{name.replace('-', '_')}_{self.suffix}"
        self.exec_log = self.dir / "executions.log"
        self.redis: RedisServer | None = None
        if broker == "redis":
            self.redis = RedisServer(self.dir / "redis", persistent=redis_persistent)
        self.queues = [f"faults-{self.suffix}", f"faults-{self.suffix}.events"]
        self.daemons: list[Daemon] = []
        self.schedulers: list[Daemon] = []
        self.workers: list[Daemon] = []
        self._n = 0
        self.store: Any = None
        self.run_id = ""
        self.seed = 7
        self.database_url = ""

    @property
    def broker_url(self) -> str:
        return self.redis.url if self.redis else AMQP

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWKIT_", "FAULT_"))}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                # test isolation only: every other FLOWKIT_* setting is the default
                "FLOWKIT_DATABASE_URL": self.database_url,
                "FLOWKIT_BROKER_URL": self.broker_url,
                "FLOWKIT_DAGS_FOLDER": str(DAGS),
                "FLOWKIT_DEFAULT_QUEUE": self.queues[0],
                "FLOWKIT_EVENTS_QUEUE": self.queues[1],
                "FAULT_EXEC_LOG": str(self.exec_log),
            }
        )
        return env

    def start(self) -> None:
        from flowkit.store.sql import SqlStore

        if self.redis:
            self.redis.start()
        else:
            # The scheduler purges the events queue on start; on RabbitMQ that fails with 404
            # until something declared the queue. Declare it as BrokerEvents does (durable, on
            # the default exchange). See bench/FAULTS.md.
            declare_amqp_queue(AMQP, self.queues[1])
        self.database_url = self.pg.create_db(self.db_name)
        up = self.cli("db", "upgrade")
        if up.returncode != 0:
            raise InfraError(f"flowkit db upgrade failed:\n{up.stdout}\n{up.stderr}")
        self.store = SqlStore(self.database_url)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowkit.cli", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _next(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def start_scheduler(self) -> Daemon:
        d = Daemon(self._next("scheduler-"), ["--log-level", "INFO", "scheduler"], self.env(), self.dir)
        self.daemons.append(d)
        self.schedulers.append(d)
        return d

    def start_worker(self) -> Daemon:
        name = self._next("worker-")
        d = Daemon(
            name, ["--log-level", "INFO", "worker", "-c", "2", "-n", f"{name}-{self.suffix}@%h"], self.env(), self.dir
        )
        self.daemons.append(d)
        self.workers.append(d)
        return d

    def wait_ready(self, daemons: list[Daemon], timeout: float = 120.0) -> None:
        # A standby scheduler (PostgreSQL, another one active) is ready once it stands by.
        marks = {"scheduler": ("starting; dropped", "standing by"), "worker": (" ready.",)}
        deadline = time.monotonic() + timeout
        pending = list(daemons)
        while pending and time.monotonic() < deadline:
            for d in list(pending):
                if any(m in d.log_text() for m in marks[d.name.split("-")[0]]):
                    pending.remove(d)
                elif not d.alive():
                    raise InfraError(f"{d.name} exited while starting:\n{d.log_text()[-3000:]}")
            time.sleep(0.2)
        if pending:
            raise InfraError(f"not ready after {timeout:g} s: {', '.join(d.name for d in pending)}")

    def trigger(self, flow: str = FLOW, seed: int = 7) -> str:
        out = self.cli("trigger", flow, "-p", f"log={self.exec_log}", "-p", f"seed={seed}")
        if out.returncode != 0:
            raise InfraError(f"flowkit trigger failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout.strip().splitlines()[-1]

    # -- reading the store (None while it is unreachable) --
    def steps(self, run_id: str) -> list[dict[str, Any]] | None:
        try:
            return self.store.step_runs(run_id)  # type: ignore[no-any-return]
        except Exception:
            return None

    def attempts(self, run_id: str) -> list[dict[str, Any]] | None:
        try:
            return self.store.attempts(run_id)  # type: ignore[no-any-return]
        except Exception:
            return None

    def run(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get_run(run_id)  # type: ignore[no-any-return]
        except Exception:
            return None

    def read_until(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value is not None or time.monotonic() >= deadline:
                return value
            time.sleep(0.5)

    def worker_of_pid(self, pid: int) -> Daemon | None:
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((w for w in self.workers if w.pid == pgid and w.alive()), None)

    def close(self) -> list[str]:
        notes = []
        for d in self.daemons:
            d.stop()
        if self.redis:
            self.redis.stop()
        if self.store is not None:
            self.store.dispose()
        if self.broker == "amqp":
            try:
                notes += amqp_delete(AMQP, self.queues)
            except Exception as exc:
                notes.append(f"could not delete the AMQP queues {self.queues}: {exc}")
        return notes
