"""A step's own output per attempt on real processes (PostgreSQL + Redis): `flowkit logs`
on a failed and a retried attempt of a Python step that logs and prints, on a threads pool
(each thread keeps its own attempt's prints); `--follow` prints a running shell step's
lines before it ends. Flows: tests/dags/obslogs/logs_flows.py."""

from __future__ import annotations

import subprocess
import sys

from .procs import wait_for

DAGS = "tests/dags/obslogs"


def test_logs_of_a_failed_and_a_retried_attempt_on_a_threads_pool(make_cluster, open_store, pg_url, redis_url):
    # Given a scheduler and a threads-pool worker running two runs of the retry flow at once
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    store = open_store(pg_url)
    cluster.scheduler()
    cluster.start("worker", "worker", "--pool", "threads", "-c", "2", "-n", "worker@%h")
    runs = [cluster.cli("trigger", "logs_retry").stdout.strip() for _ in range(2)]
    # When both have ended
    for run_id in runs:
        wait_for(lambda r=run_id: store.get_run(r)["state"] == "success", 60, "the run to succeed", cluster)
    for run_id in runs:
        # Then `flowkit logs` prints the latest attempt's own output, and --attempt 1 the first's
        latest = cluster.cli("logs", run_id, "chatty").stdout
        first = cluster.cli("logs", run_id, "chatty", "--attempt", "1").stdout
        assert "INFO attempt 2 starting" in latest and "WARNING attempt 2 done" in latest, cluster.logs()
        assert "printed by attempt 2\nto stderr from attempt 2" in latest
        assert "attempt 1" not in latest
        assert "INFO attempt 1 starting" in first and "printed by attempt 1\nto stderr from attempt 1" in first
        assert "attempt 2" not in first
        assert first.count("no newline at the end") == 1  # one attempt's, not the other thread's
        # and `runs show --step` prints each attempt's Celery task id and its last lines
        shown = cluster.cli("runs", "show", run_id, "--step", "chatty").stdout
        for a in store.attempts(run_id, "chatty"):
            assert f"task {a['task_id']}  (Flower: logs_retry.chatty)" in shown
        assert "attempt 1: failed" in shown and "    printed by attempt 1" in shown
    # A step that printed nothing keeps no output
    assert all(a["output"] is None for r in runs for a in store.attempts(r, "quiet"))
    # Unknown attempt: one line saying which exist
    wrong = cluster.cli("logs", runs[0], "chatty", "--attempt", "5", check=False)
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == (
        f"error: run {runs[0]} step chatty has no attempt 5; its attempts are 1, 2 (leave out --attempt for the latest)"
    )


def test_follow_prints_a_running_shell_steps_lines_before_it_ends(make_cluster, open_store, pg_url, redis_url):
    # Given a shell step that prints a line a second for six seconds
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    store = open_store(pg_url)
    cluster.scheduler()
    cluster.worker()
    run_id = cluster.cli("trigger", "logs_follow").stdout.strip()
    # When `flowkit logs --follow` runs from the start (it waits for the attempt)
    follow = subprocess.Popen(
        [sys.executable, "-m", "flowkit.cli", "logs", run_id, "slow", "--follow"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        # Then its first line comes while the attempt is still running
        (attempt,) = store.attempts(run_id, "slow")
        assert first == "line 1\n", cluster.logs()
        assert attempt["state"] == "running"
        assert store.get_run(run_id)["state"] == "running"
        rest, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    # and it prints every later line once, then says how the attempt ended, and exits
    assert (first + rest).splitlines() == [f"line {i}" for i in range(1, 7)] + ["finished"]
    assert err.strip() == "(attempt 1 success)"
    assert follow.returncode == 0
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 30, "the run to succeed", cluster)
