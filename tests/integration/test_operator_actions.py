"""Operators' actions on real processes: a scheduler and a prefork worker over PostgreSQL and
Redis, driven through the installed ``flowkit`` command as an operator does. One cluster
serves the whole module (each test uses flows of its own). Flows: tests/dags/operator."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.store.sql import SqlStore

from .limits_support import flowkit
from .procs import Cluster, wait_for, wait_for_a_full_sweep
from .services import FAST_DETECTION, cluster_on_fresh_services


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, SqlStore]]:
    """A database and Redis of their own, the schema, pool "one" (1 slot), a scheduler and a
    worker with two prefork processes."""
    with cluster_on_fresh_services(
        tmp_path_factory.mktemp("operator"),
        "tests/dags/operator",
        workers=[("worker", 2)],
        setup=[("pools", "set", "one", "1")],
        **FAST_DETECTION,
    ) as got:
        yield got


def trigger(cluster: Cluster, flow: str, *params: str) -> str:
    args = [a for p in params for a in ("-p", p)]
    return flowkit(cluster, "trigger", flow, *args).stdout.strip()


def run_ends(store: SqlStore, run_id: str, cluster: Cluster, timeout: float = 15) -> str:
    state: str = wait_for(
        lambda: store.get_run(run_id)["state"] in ("success", "failed", "cancelled") and store.get_run(run_id)["state"],
        timeout,
        f"run {run_id} to end",
        cluster,
    )
    return state


def steps(store: SqlStore, run_id: str) -> dict[str, str]:
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def attempt_numbers(store: SqlStore, run_id: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for a in store.attempts(run_id):
        out.setdefault(a["step"], []).append(a["number"])
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_terminates_the_running_step_and_its_slot_goes_to_the_next_run(env, tmp_path: Path):
    cluster, store = env
    log = tmp_path / "hold.log"
    # Given a 30 s step running in pool "one" (1 slot), and a second run waiting for the slot
    first = trigger(cluster, "held", "seconds=30", f"log={log}")
    wait_for(lambda: log.exists() and log.read_text().startswith("start"), 15, "the long step to start", cluster)
    pid = int(log.read_text().split()[2])
    second = trigger(cluster, "held", "seconds=0.2")
    wait_for(lambda: steps(store, second)["hold"] == "scheduled", 10, "the second run to wait", cluster)
    assert store.ledger_balance()["pool:one"] == (1, 1)
    # When the operator cancels the first run
    started = time.monotonic()
    out = flowkit(cluster, "runs", "cancel", first[:8], "--by", "ann", "--reason", "stuck").stdout
    assert out.splitlines() == [
        f"run {first}: cancelled (1 step(s) cancelled, 1 attempt(s) stopped, 1 pool slot(s) given back)",
        "1 running step terminated (SIGTERM to its prefork pool process)",
    ]
    # Then the step's process is terminated, and the waiter gets the slot at once
    wait_for(lambda: not alive(pid), 10, f"pool process {pid} to be terminated", cluster)
    assert run_ends(store, second, cluster) == "success"
    assert time.monotonic() - started < 10
    assert store.get_run(first)["state"] == "cancelled"
    assert [a["state"] for a in store.attempts(first)] == ["cancelled"]
    assert "end" not in log.read_text()  # the step never finished
    # and the cancelled attempt was not put back or run again; the ledger balances, empty
    wait_for_a_full_sweep(store, cluster)  # nothing revives it
    assert [a["state"] for a in store.attempts(first)] == ["cancelled"]
    assert not [e for e in store.events(first) if e["action"] in ("attempt_interrupted", "lease_expired")]
    assert store.ledger_balance()["pool:one"] == (0, 0)
    assert all(used == held for used, held in store.ledger_balance().values())
    actions = [(e["action"], e["actor"]) for e in store.events(first) if e["action"].startswith("operator")]
    assert actions == [("operator_cancel", "ann")]
    worker_log = cluster.daemons[1].log()
    assert f"run {first} step hold: attempt 1 stopped after an operator cancelled it; not run again" in worker_log


def test_pause_keeps_runs_queued_and_unpause_starts_them_one_at_a_time(env):
    cluster, store = env
    flowkit(cluster, "flows", "pause", "single", "--reason", "deploy")
    proc = flowkit(cluster, "trigger", "single", "-p", "seconds=0.5")
    first = proc.stdout.strip()
    assert "is paused" in proc.stderr and "flowkit flows unpause single" in proc.stderr
    second = trigger(cluster, "single", "seconds=0.5")
    wait_for_a_full_sweep(store, cluster)
    assert [store.get_run(r)["state"] for r in (first, second)] == ["queued", "queued"]
    flowkit(cluster, "flows", "unpause", "single")
    assert run_ends(store, first, cluster) == "success"
    assert run_ends(store, second, cluster) == "success"
    a, b = store.get_run(first), store.get_run(second)
    assert a["ended_at"] <= b["started_at"]  # max_active_runs=1 still holds


def test_retry_from_the_failed_step_after_fixing_its_cause(env, tmp_path: Path):
    cluster, store = env
    flag = tmp_path / "flag"
    flag.write_text("stop")
    run_id = trigger(cluster, "gated", f"flag={flag}")
    assert run_ends(store, run_id, cluster) == "failed"
    assert steps(store, run_id)["gate"] == "failed"
    flag.write_text("go")
    out = flowkit(cluster, "runs", "retry", run_id, "--reason", "flag fixed").stdout
    assert "3 step(s) back to pending: gate, load, publish" in out
    assert run_ends(store, run_id, cluster) == "success"
    assert attempt_numbers(store, run_id) == {
        "extract": [1],
        "gate": [1, 2],
        "load": [1],
        "publish": [1],
        "report": [1],
    }
    # Retrying a step and its downstream: every attempt goes on from its last number (on
    # PostgreSQL a worker's one-statement finish leaves such steps to the machine)
    flowkit(cluster, "runs", "retry", run_id, "--step", "extract", "--downstream")
    assert run_ends(store, run_id, cluster) == "success"
    assert attempt_numbers(store, run_id) == {
        "extract": [1, 2],
        "gate": [1, 2, 3],
        "load": [1, 2],
        "publish": [1, 2],
        "report": [1, 2],
    }
    assert len({a["task_id"] for a in store.attempts(run_id)}) == 11


def test_mark_success_unblocks_the_downstream_step(env):
    cluster, store = env
    run_id = trigger(cluster, "broken")
    assert run_ends(store, run_id, cluster) == "failed"
    assert steps(store, run_id)["after_bad"] == "upstream_failed"
    out = flowkit(cluster, "runs", "mark", run_id, "bad", "success", "--by", "ann").stdout
    assert "failed -> success; run running (reopened)" in out
    assert run_ends(store, run_id, cluster) == "success"
    assert attempt_numbers(store, run_id)["after_bad"] == [1]
    trail = flowkit(cluster, "runs", "show", run_id, "--events").stdout
    assert "operator_mark" in trail and "marked success by ann" in trail
    assert_no_errors_but_failed_steps(cluster)


def assert_no_errors_but_failed_steps(cluster: Cluster) -> None:
    """The daemons logged no error other than the steps these tests fail on purpose."""
    expected = ("broken on purpose", "says 'stop', not 'go'")
    lines = [
        line
        for d in cluster.daemons
        for line in d.log().splitlines()
        if (" ERROR " in line or "Traceback" in line) and not any(e in line for e in expected)
    ]
    assert not lines, "\n".join(lines[:20])
