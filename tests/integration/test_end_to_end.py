"""Flows through a real `flowkit scheduler` and real Celery worker processes."""

from __future__ import annotations

import json

from flowkit.store.sql import SqlStore

from .procs import wait_for


def _running_cluster(make_cluster, database_url: str, broker_url: str, dags: str = "dags", concurrency: int = 1):  # type: ignore[no-untyped-def]
    """A migrated store, a scheduler and one worker."""
    cluster = make_cluster(database_url, broker_url, dags=dags)
    cluster.scheduler()
    cluster.worker(concurrency=concurrency)
    return cluster


def _run_state(store: SqlStore, run_id: str) -> str | None:
    state = store.get_run(run_id)["state"]
    return state if state in ("success", "failed") else None


def test_orders_flow_on_redis_and_postgres(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given a migrated PostgreSQL store, a scheduler and a worker on Redis
    cluster = _running_cluster(make_cluster, pg_url, redis_url, concurrency=2)
    # When the orders flow is triggered from the CLI, with three order lines
    lines = '[{"item": "widget", "quantity": 3}, {"item": "gizmo", "quantity": 1}, {"item": "widget", "quantity": 1}]'
    run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}", "-p", f"lines={lines}").stdout.strip()
    store = open_store(pg_url)
    # Then it succeeds, every step has the right state, result and one attempt in SQL
    assert wait_for(lambda: _run_state(store, run_id), 60, "the run to end", cluster) == "success"
    steps = {s["step"]: s for s in store.step_runs(run_id)}
    expected = {
        "receive": "success",
        "check_inventory": "success",
        "route": "success",
        "reserve": "success",
        "backorder": "skipped",
        "invoice": "success",
        "review": "success",
        "approve_large": "skipped",
        "pack": "success",
        "ship": "success",
        "ship[0]": "success",
        "ship[1]": "success",
        "ship[2]": "success",
        "notify_customer": "success",
        "update_accounting": "success",
    }
    assert {k: v["state"] for k, v in steps.items()} == expected
    attempts = store.attempts(run_id)
    # every step that ran has one attempt; the map step runs as its instances (one per line)
    assert sorted(a["step"] for a in attempts) == sorted(
        k for k, v in expected.items() if v == "success" and k != "ship"
    )
    assert all(a["number"] == 1 and a["deliveries"] == 1 and a["state"] == "success" for a in attempts)
    assert all(a["worker"] and a["started_at"] <= a["ended_at"] for a in attempts)
    results = store.results(run_id)
    assert [line["quantity"] for line in results["receive"]["lines"]] == [3, 1, 1]
    assert results["invoice"]["total"] == 30.3  # (4 x 4.50 + 7.25) + 20 % tax
    assert results["route"] == ["reserve"]
    assert [r["line"] for r in results["ship"]] == [1, 2, 3]
    assert json.loads((tmp_path / "stock.json").read_text()) == {"widget": 96, "gadget": 0, "gizmo": 39}
    assert len(list(tmp_path.glob("label-*.txt"))) == 3
    # and the CLI shows it, as a table and as JSON
    table = cluster.cli("runs", "show", run_id).stdout
    assert "backorder" in table and "skipped" in table and "state success" in table
    shown = json.loads(cluster.cli("runs", "show", run_id, "--json").stdout)
    assert {s["step"]: s["attempts"] for s in shown["steps"]}["invoice"] == 1
    listed = json.loads(cluster.cli("runs", "list", "--json").stdout)
    assert listed[0]["id"] == run_id and listed[0]["state"] == "success"


def test_failing_step_retries_then_fails_on_real_processes(make_cluster, open_store, pg_url, redis_url):
    cluster = _running_cluster(make_cluster, pg_url, redis_url, dags="tests/dags/engine")
    run_id = cluster.cli("trigger", "failing").stdout.strip()
    store = open_store(pg_url)
    assert wait_for(lambda: _run_state(store, run_id), 60, "the run to end", cluster) == "failed"
    flaky = store.attempts(run_id, "flaky")
    assert [a["state"] for a in flaky] == ["failed"] * 3
    gaps = [(flaky[i + 1]["started_at"] - flaky[i]["ended_at"]).total_seconds() for i in range(2)]
    assert gaps[0] >= 0.7 and gaps[1] >= 1.4 and gaps[1] > gaps[0], gaps
    states = {s["step"]: s["state"] for s in store.step_runs(run_id)}
    assert states["after_flaky"] == states["after_after"] == "upstream_failed"
    assert states["independent"] == "success"


def test_step_timeout_is_enforced_by_the_worker(make_cluster, open_store, pg_url, redis_url):
    cluster = _running_cluster(make_cluster, pg_url, redis_url, dags="tests/dags/engine")
    run_id = cluster.cli("trigger", "timeout").stdout.strip()
    store = open_store(pg_url)
    assert wait_for(lambda: _run_state(store, run_id), 40, "the run to end", cluster) == "failed"
    (attempt,) = store.attempts(run_id, "sleepy")
    assert "timed out after 1 s" in attempt["error"]
    assert (attempt["ended_at"] - attempt["started_at"]).total_seconds() < 10


def test_orders_flow_on_rabbitmq(make_cluster, open_store, pg_url, amqp_url, tmp_path):
    cluster = _running_cluster(make_cluster, pg_url, amqp_url)
    run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}").stdout.strip()
    store = open_store(pg_url)
    assert wait_for(lambda: _run_state(store, run_id), 60, "the run to end", cluster) == "success"
    # 9 steps ran (backorder and the approval were skipped) and the map step's 2 instances
    assert len(store.attempts(run_id)) == 11


def test_step_ignoring_its_timeout_is_failed_then_killed(make_cluster, open_store, pg_url, redis_url):
    # Given a step that swallows its StepTimedOut (timeout 1 s, Celery's hard limit 6 s)
    cluster = _running_cluster(make_cluster, pg_url, redis_url, dags="tests/dags/engine")
    run_id = cluster.cli("trigger", "hard_timeout").stdout.strip()
    store = open_store(pg_url)
    # Then the attempt is failed one grace period after its timeout (not left running), the
    # run fails, and the pool kills the stuck child at the hard limit
    assert wait_for(lambda: _run_state(store, run_id), 40, "the run to end", cluster) == "failed"
    (attempt,) = store.attempts(run_id, "stubborn")
    assert attempt["state"] == "failed"
    assert attempt["error"].startswith("timed out after 1 s (timeout= on the step)")
    assert "it did not stop; its outcome will be discarded" in attempt["error"]
    assert (attempt["ended_at"] - attempt["started_at"]).total_seconds() < 4
    assert {s["step"]: s["state"] for s in store.step_runs(run_id)}["after"] == "upstream_failed"
    wait_for(lambda: "Hard time limit (6.0s) exceeded" in cluster.logs(), 15, "the hard limit to kill it", cluster)


def test_concurrent_dag_syncs_do_not_collide(pg_url):
    # The scheduler and `flowkit trigger` both record the dags folder; on PostgreSQL two
    # loads at once must not fail with a unique violation.
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from flowkit.loading.loader import load_folder

    store = SqlStore(pg_url)
    try:
        store.upgrade()
        report = load_folder(Path(__file__).resolve().parents[2] / "dags")
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: store.record_load(report.files), range(24)))
        flows = {f["name"] for f in store.list_flows()}
        assert flows == {"orders", "telematics", "fleet_report", "ml_training", "starter"}
        assert len(store.dag_file_rows()) == 4  # dags/_files.py is a helper, not a dags file
    finally:
        store.dispose()
