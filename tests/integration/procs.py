"""Start real flowkit daemons as subprocesses (own process group, logs to files) and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Daemon:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.is_flowkit = False  # a `flowkit ...` command (Cluster.start)
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: kill takes the pool too
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the daemon and every process it started (a machine dying)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM the daemon's process group (a clean stop), without waiting."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """A scheduler and workers for one test; ``close()`` stops whatever is still running."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.daemons: list[Daemon] = []

    def start(self, name: str, *args: str) -> Daemon:
        """Start ``flowkit ARGS...``."""
        d = self.start_command(name, [sys.executable, "-m", "flowkit.cli", *args])
        d.is_flowkit = True
        return d

    def start_command(self, name: str, argv: list[str]) -> Daemon:
        d = Daemon(name, argv, self.env, self.logdir)
        self.daemons.append(d)
        return d

    def scheduler(self, name: str = "scheduler") -> Daemon:
        return self.start(name, "scheduler")

    def worker(self, name: str = "worker", concurrency: int = 1) -> Daemon:
        return self.start(name, "worker", "-c", str(concurrency), "-n", f"{name}@%h")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "flowkit.cli", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"flowkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def close(self, timeout: float = 15) -> None:
        """Stop every daemon still running: flowkit's own all at once, then each is waited for
        (SIGKILL for one still running after ``timeout``); then any other command (a broker of
        the test's own, a plain celery worker) in the order started, as they may depend on it."""
        ours = [d for d in self.daemons if d.is_flowkit]
        for d in ours:
            d.terminate()
        deadline = time.monotonic() + timeout
        for d in ours:
            d.stop(timeout=max(deadline - time.monotonic(), 0.1))
        for d in self.daemons:
            if not d.is_flowkit:
                d.stop(timeout=timeout)

    def logs(self) -> str:
        return "\n".join(f"===== {d.name} =====\n{d.log()[-6000:]}" for d in self.daemons)


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, cluster: Cluster | None = None, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    logs = cluster.logs() if cluster else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")


def wait_for_a_full_sweep(store: Any, cluster: Cluster | None = None, timeout: float = 30) -> int:
    """Return once the active scheduler has finished a sweep that began after this call (its
    heartbeat row carries ``sweeps`` and ``sweep_started_at``); returns that sweep's number."""
    from datetime import datetime

    from flowkit.store.sql import utcnow

    since = utcnow()

    def swept() -> int:
        for row in store.schedulers():
            stats = row["stats"]
            began = stats.get("sweep_started_at")
            if stats.get("role") == "active" and began and datetime.fromisoformat(began) >= since:
                return int(stats["sweeps"])
        return 0

    return int(wait_for(swept, timeout, "a full scheduler sweep begun after the wait started", cluster))


def active_and_standby(cluster: Cluster) -> tuple[Daemon, Daemon]:
    """Two schedulers (the first active, the second standing by) and a worker, on a migrated database."""
    first = cluster.scheduler("scheduler-a")
    wait_for(lambda: "active (holds the scheduler lease)" in first.log(), 30, "scheduler a to be active", cluster)
    second = cluster.scheduler("scheduler-b")
    wait_for(lambda: "standing by" in second.log(), 30, "scheduler b to stand by", cluster)
    cluster.worker()
    return first, second
