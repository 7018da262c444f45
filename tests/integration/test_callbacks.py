"""Callbacks on real processes: PostgreSQL, Redis, a scheduler and prefork workers.
Flows: tests/dags/callbacks/cb_flows.py (every callback appends its context to a file)."""

from __future__ import annotations

import json
from pathlib import Path

from flowkit.loading.sync import sync_dags
from flowkit.spec import resolve_params
from flowkit.store import callback_ops

from .limits_support import explain, wait_runs_ended
from .procs import wait_for

DAGS = "tests/dags/callbacks"


def _lines(path: Path) -> list[tuple]:
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sorted((e["kind"], e["step"] or "", e["state"], e["attempt"] or 0) for e in entries)


def test_callbacks_run_on_workers_and_a_raising_one_changes_nothing(
    pg_url, redis_url, make_cluster, open_store, tmp_path
):
    # Given a failing flow with step-level on_retry and flow-level on_failure, and a flow whose
    # callbacks raise
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    store = open_store(pg_url)
    sync_dags(store, cluster.env["FLOWKIT_DAGS_FOLDER"])
    fail_out, raise_out = tmp_path / "fail.jsonl", tmp_path / "raise.jsonl"
    runs = {}
    for flow, out in (("cb_fail", fail_out), ("cb_raise", raise_out)):
        spec = store.flow_spec(flow)
        runs[flow] = str(store.create_run(spec, resolve_params(spec, {"out": str(out)}), actor="test"))
    # When a scheduler and two prefork workers run them
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=2)
    cluster.worker("worker-b", concurrency=2)
    states = wait_runs_ended(store, list(runs.values()), 60, cluster)
    wait_for(
        lambda: all(callback_ops.pending(store, r) == 0 for r in runs.values()), 30, "the callbacks to be done", cluster
    )
    # Then the failing run failed and every callback it defines ran once
    assert states == {runs["cb_fail"]: "failed", runs["cb_raise"]: "success"}, explain(
        store, list(runs.values()), cluster
    )
    assert _lines(fail_out) == [
        ("on_failure", "", "failed", 0),  # the flow's, when the run ended
        ("on_failure", "a", "failed", 2),  # the step's, when its last attempt failed
        ("on_retry", "a", "up_for_retry", 1),  # the step's, when attempt 1 failed
        ("on_retry", "a", "up_for_retry", 1),  # the flow's, for the same retry
    ]
    # and the raising callbacks ran, were recorded as failed, and left the run as it was
    assert _lines(raise_out) == [("on_success", "", "success", 0), ("on_success", "a", "success", 1)]
    events = store.events(runs["cb_raise"])
    failed = [e for e in events if e["action"] == "callback_failed"]
    assert len(failed) == 2 and all("RuntimeError: on_success callback exploded" in e["reason"] for e in failed)
    assert {s["step"]: s["state"] for s in store.step_runs(runs["cb_raise"])} == {"a": "success", "b": "success"}
    assert [e["new_state"] for e in events if e["action"] == "run_state"][-1] == "success"
    assert "callback exploded" in cluster.logs()
