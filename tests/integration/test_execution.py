"""How a step executes, on real processes: shell steps, success_when and Refs on a prefork
worker, and timeout= on every pool `flowkit worker --pool` accepts (PostgreSQL + Redis).
Flows: tests/dags/exec/execution.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowkit.store.sql import SqlStore

from ..pids import pid_gone
from .limits_support import create_runs, explain, wait_runs_ended
from .procs import Cluster

DAGS = "tests/dags/exec"


def _cluster(make_cluster, pg_url: str, redis_url: str, workdir: Path) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = make_cluster(pg_url, redis_url, dags=DAGS, EXEC_TEST_DIR=str(workdir))
    return cluster


def _one(store: SqlStore, run_id: str, step: str) -> dict:
    (attempt,) = store.attempts(run_id, step)
    return attempt


def test_shell_success_when_and_refs_on_a_prefork_worker(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given one run of each flow, queued before a scheduler and a prefork worker start
    cluster = _cluster(make_cluster, pg_url, redis_url, tmp_path)
    store = open_store(pg_url)
    runs = {
        flow: create_runs(cluster, store, flow, 1, **params)[0]
        for flow, params in [
            ("shell_ok", {}),
            ("shell_exit", {}),
            ("shell_fail_on", {}),
            ("shell_timeout", {}),
            ("success_when", {"rows": 0}),
            ("refs", {}),
        ]
    }
    cluster.scheduler()
    cluster.worker(concurrency=3)
    # When they have all ended
    states = wait_runs_ended(store, list(runs.values()), 40, cluster)
    why = explain(store, runs.values(), cluster)
    assert states == {**{r: "failed" for r in runs.values()}, runs["shell_ok"]: "success", runs["refs"]: "success"}, why
    # Then a shell step's result, output and downstream read are there
    assert store.results(runs["shell_ok"])["hello"] == {"exit_code": 0, "last_lines": ["hello world", "from /"]}
    assert _one(store, runs["shell_ok"], "hello")["output"] == "hello world\nfrom /"
    # an exit code outside success_codes fails every attempt, with the code and the last line
    bad = store.attempts(runs["shell_exit"], "bad")
    assert [a["state"] for a in bad] == ["failed", "failed"]
    assert bad[1]["error"] == "the command exited with 3; it should exit with 0; last output line: 'about to fail'"
    # a fail_on line fails the attempt although the command exited 0
    grep = _one(store, runs["shell_fail_on"], "grep")
    assert grep["error"] == "output line matched fail_on '^ERROR\\\\b': 'ERROR: disk full'", why
    # the timeout kills the command's whole process group: its background child is gone
    sleeper = _one(store, runs["shell_timeout"], "sleeper")
    assert sleeper["error"].startswith("timed out after 1 s (timeout= on the step)")
    assert (sleeper["ended_at"] - sleeper["started_at"]).total_seconds() < 5
    assert pid_gone(int((tmp_path / "child.pid").read_text())), "the shell's child outlived the timeout"
    # success_when turns a returned result into failed attempts (retries apply)
    counts = store.attempts(runs["success_when"], "count")
    assert [a["state"] for a in counts] == ["failed", "failed"]
    assert 'success_when=<lambda> said no to the result {"rows": 0}' in counts[0]["error"]
    # a Ref is stored tagged and read downstream as a Ref
    assert store.results(runs["refs"])["produce"]["__flowkit_ref__"] == 1
    assert store.results(runs["refs"])["consume"]["uri"] == "s3://lake/orders/2026-11-23.parquet"
    # and `runs show --step` shows each attempt's error and output
    shown = cluster.cli("runs", "show", runs["shell_exit"], "--step", "bad").stdout
    assert "attempt 2: failed" in shown and "  output (end):\n    about to fail" in shown
    as_json = json.loads(cluster.cli("runs", "show", runs["shell_exit"], "--step", "bad", "--json").stdout)
    assert [a["output"] for a in as_json["attempts"]] == ["about to fail", "about to fail"]


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_timeout_holds_on_the_pool(pool, make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given a worker on the solo or threads pool (Celery's time limits do nothing there)
    cluster = _cluster(make_cluster, pg_url, redis_url, tmp_path)
    store = open_store(pg_url)
    sleep_run = create_runs(cluster, store, "timeout_sleep", 1)[0]
    shell_run = create_runs(cluster, store, "shell_timeout", 1)[0]
    cluster.scheduler()
    cluster.start(f"worker-{pool}", "worker", "--pool", pool, "-c", "2", "-n", f"{pool}@%h")
    # When a step with timeout=1 sleeps 4 s, and a shell step with timeout=1 sleeps 30 s
    states = wait_runs_ended(store, [sleep_run, shell_run], 30, cluster)
    # Then both fail with the timeout, before the sleeps end, and the shell's child is gone
    assert states == {sleep_run: "failed", shell_run: "failed"}, explain(store, [sleep_run, shell_run], cluster)
    sleeps = _one(store, sleep_run, "sleeps")
    assert sleeps["error"].startswith("timed out after 1 s (timeout= on the step)")
    assert (sleeps["ended_at"] - sleeps["started_at"]).total_seconds() < 3.5
    assert {s["step"]: s["state"] for s in store.step_runs(sleep_run)}["after"] == "upstream_failed"
    sleeper = _one(store, shell_run, "sleeper")
    assert sleeper["error"].startswith("timed out after 1 s (timeout= on the step)")
    assert pid_gone(int((tmp_path / "child.pid").read_text())), "the shell's child outlived the timeout"


def test_a_pool_child_told_to_stop_takes_its_command_down(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given a shell step whose command runs a 30 s background child, on a prefork worker
    import os
    import signal

    from .procs import wait_for

    cluster = _cluster(make_cluster, pg_url, redis_url, tmp_path)
    store = open_store(pg_url)
    run_id = create_runs(cluster, store, "shell_long", 1)[0]
    cluster.scheduler()
    cluster.worker(concurrency=1)
    pid_file = tmp_path / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, "the command to start", cluster)
    child = int(pid_file.read_text())
    pool_child = int(store.attempts(run_id, "waits")[0]["worker"].rsplit(":", 1)[1])
    pid_file.unlink()
    # When the pool child running it gets SIGTERM (what a revoke with terminate sends)
    os.kill(pool_child, signal.SIGTERM)
    # Then the command's process group is gone with it, and the attempt is put back, not failed
    assert pid_gone(child), "the command's child outlived the pool child"
    wait_for(
        lambda: any(e["action"] == "attempt_interrupted" for e in store.events(run_id)),
        10,
        "the attempt to be put back",
        cluster,
    )
    assert store.attempts(run_id, "waits")[0]["state"] in ("queued", "running")
