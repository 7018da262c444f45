"""A broker that goes away while a step runs costs no body: the step's outcome is recorded
once, from the body that was running (SQL is the state; the message's ack does not matter)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from ..conftest import service_missing
from .procs import Cluster, Daemon, wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(cluster: Cluster, port: int, tmp_path: Path, name: str) -> Daemon:
    """A redis-server of this test's own, keeping nothing on disk (its queue dies with it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server (the binary)", FileNotFoundError("redis-server"))
    daemon = cluster.start_command(
        name,
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
    )

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, 10, f"{name} to listen", cluster, interval=0.05)
    return daemon


def test_a_broker_restart_while_a_step_runs_keeps_its_body(make_cluster, open_store, pg_url, tmp_path):
    # Given a cluster on a Redis of its own, and a step that runs for 4 s
    port = _free_port()
    cluster = make_cluster(pg_url, f"redis://127.0.0.1:{port}/0", dags="tests/dags/broker_loss")
    broker = _redis(cluster, port, tmp_path, "redis-1")
    cluster.scheduler()
    cluster.worker(concurrency=1)
    store = open_store(pg_url)
    log = tmp_path / "bodies.log"
    run_id = cluster.cli("trigger", "broker_loss", "-p", f"log={log}").stdout.strip()
    wait_for(
        lambda: {s["step"]: s["state"] for s in store.step_runs(run_id)}.get("slow") == "running",
        30,
        "the slow step to run",
        cluster,
    )
    wait_for(lambda: log.exists() and log.read_text().startswith("start slow 1"), 30, "the body to start", cluster)
    # When the broker stops (losing its messages) while the body runs, and comes back 3 s later
    broker.kill()
    time.sleep(3)  # the outage itself (the fault under test), not a wait for any process
    _redis(cluster, port, tmp_path, "redis-2")
    # Then the run succeeds; the body that was running ran on to its end and is the one
    # recorded (attempt 1, one start, one end: it was not stopped and run again)
    wait_for(lambda: store.get_run(run_id)["state"] in ("success", "failed"), 90, "the run to end", cluster)
    assert store.get_run(run_id)["state"] == "success", cluster.logs()
    assert log.read_text().splitlines() == ["start slow 1", "end slow 1"], cluster.logs()
    assert [(a["number"], a["state"], a["deliveries"]) for a in store.attempts(run_id, "slow")] == [(1, "success", 1)]
