"""Compensation and approvals on real processes: a scheduler and prefork workers over
PostgreSQL and Redis (the PostgreSQL fast path of a successful finish included). One
cluster for the module. Flows: tests/dags/saga/flows.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.store.sql import SqlStore

from ..unit import saga_retry_cases
from .procs import Cluster, wait_for
from .services import cluster_on_fresh_services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saga(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, SqlStore]]:
    """A fresh PostgreSQL database and Redis db, a scheduler and two prefork workers. The
    sweep is slow (30 s) so that only the scheduler's events can explain a quick hop."""
    with cluster_on_fresh_services(
        tmp_path_factory.mktemp("saga"),
        "tests/dags/saga",
        workers=[("worker-a", 2), ("worker-b", 2)],
        FLOWKIT_SWEEP_SECONDS="30",
        FLOWKIT_HEARTBEAT_SECONDS="1",
    ) as got:
        yield got


def _trigger(cluster: Cluster, flow: str) -> str:
    return cluster.cli("trigger", flow).stdout.strip()


def _ended(store: SqlStore, run_id: str, cluster: Cluster, timeout: float = 20) -> dict:  # type: ignore[type-arg]
    return wait_for(
        lambda: (r := store.get_run(run_id))["state"] in ("success", "failed") and r,
        timeout,
        f"run {run_id} to end",
        cluster,
    )


def _state(store: SqlStore, run_id: str, step: str) -> str:
    return next((s["state"] for s in store.step_runs(run_id) if s["step"] == step), "")


def test_a_failed_run_is_compensated_by_the_workers(saga):
    cluster, store = saga
    # Given reserve -> charge -> ship (fails), reserve -> notify, charge -> audit
    run_id = _trigger(cluster, "saga_fail")
    # When it runs on prefork workers
    run = _ended(store, run_id, cluster)
    # Then it failed, compensated: each compensation ran on a worker, after those of its
    # succeeded descendants, and got its step's result
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    spans = {a["step"]: a for a in store.attempts(run_id) if a["step"].endswith(":compensate")}
    assert set(spans) == {"reserve:compensate", "charge:compensate", "notify:compensate"}
    assert all(a["state"] == "success" and a["worker"] for a in spans.values())
    for later in ("charge:compensate", "notify:compensate"):
        assert spans[later]["ended_at"] <= spans["reserve:compensate"]["started_at"]
    assert store.results(run_id)["reserve:compensate"]["result"] == {"made": "reserve"}
    assert all(used == held == 0 for used, held in store.ledger_balance().values())
    shown = cluster.cli("runs", "show", run_id).stdout
    assert "state failed (compensated)" in shown and "reserve:compensate" in shown


def test_an_approval_decided_through_the_cli_moves_the_run_at_once(saga):
    cluster, store = saga
    # Given two runs waiting at their approval step (their first step ran on a worker)
    yes, no = _trigger(cluster, "approve_me"), _trigger(cluster, "approve_me")
    for run_id in (yes, no):
        wait_for(
            lambda r=run_id: _state(store, r, "sign_off") == "awaiting_approval",
            20,
            f"run {run_id} to wait for approval",
            cluster,
        )
    # When alice approves one and bob rejects the other, from other processes
    for run_id, verb, by in ((yes, "approve", "alice"), (no, "reject", "bob")):
        out = subprocess.run(
            [sys.executable, "-m", "flowkit.cli", verb, run_id, "sign_off", "--by", by, "--reason", "checked"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    # Then the approved run's downstream step ran within a second or two of the decision
    assert _ended(store, yes, cluster)["state"] == "success"
    decided = next(e for e in store.events(yes) if e["action"] == "approved")
    assert decided["actor"] == "alice" and decided["reason"] == "approved by alice: checked"
    publish = store.attempts(yes, "publish")[0]
    assert (publish["started_at"] - decided["at"]).total_seconds() < 2.0
    # ... and the rejected run failed, its downstream upstream_failed, its first step undone
    run = _ended(store, no, cluster)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    assert _state(store, no, "publish") == "upstream_failed"
    assert _state(store, no, "prepare:compensate") == "success"
    events = cluster.cli("runs", "show", no, "--events").stdout
    assert any(
        " rejected " in line and "bob" in line and "rejected by bob: checked" in line for line in events.splitlines()
    )


def test_an_approval_timeout_is_a_scheduler_timer(saga):
    cluster, store = saga
    # Given an approval with a 2 s timeout that approves (the sweep is 30 s: only the timer
    # the worker handed to the scheduler can explain a decision on time)
    run_id = _trigger(cluster, "approve_quick_timeout")
    # When nobody decides
    assert _ended(store, run_id, cluster)["state"] == "success"
    # Then the timeout approved it, about 2 s after it began to wait
    decided = next(e for e in store.events(run_id) if e["action"] == "approved")
    waited = next(e for e in store.events(run_id) if e["new_state"] == "awaiting_approval")
    assert decided["actor"] == "timeout"
    assert 1.9 <= (decided["at"] - waited["at"]).total_seconds() < 4.0


# -- retrying a compensated run, in-process over PostgreSQL (the pg_fast finish included) ---
@pytest.mark.parametrize("case", saga_retry_cases.CASES, ids=lambda c: c.__name__)
def test_retry_of_a_compensated_run_on_postgresql(pg_url, open_store, tmp_path, case):  # type: ignore[no-untyped-def]
    store = open_store(pg_url)
    store.upgrade()
    case(store, tmp_path)
