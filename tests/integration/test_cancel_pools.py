"""What `flowkit runs cancel` stops on a worker that cannot terminate a step (the threads
pool), on real processes over PostgreSQL and Redis: a shell step's process group is killed,
a Python step is reported as not interruptible, queued attempts are revoked, and the
command says exactly that. Flows: tests/dags/cancelpools/flows.py."""

from __future__ import annotations

import time

from ..pids import pid_gone
from .limits_support import create_runs, flowkit
from .procs import wait_for

DAGS = "tests/dags/cancelpools"


def test_cancel_on_a_threads_worker_kills_the_shell_step_and_says_what_it_could_not_stop(
    make_cluster, open_store, pg_url, redis_url, tmp_path
):
    # Given a run with a shell step and a Python step running on a `--pool threads` worker,
    # and two steps queued for a queue no worker serves
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, CANCEL_TEST_DIR=str(tmp_path))
    store = open_store(pg_url)
    run_id = create_runs(cluster, store, "mixed", 1)[0]
    cluster.scheduler()
    worker = cluster.start("worker-threads", "worker", "--pool", "threads", "-c", "2", "-n", "threads@%h")
    for name in ("child.pid", "shell.pid", "python.started"):
        wait_for(
            lambda name=name: (tmp_path / name).exists() and (tmp_path / name).read_text().strip(),
            30,
            f"{name} to be written",
            cluster,
        )
    child, shell = int((tmp_path / "child.pid").read_text()), int((tmp_path / "shell.pid").read_text())
    wait_for(
        lambda: {a["step"]: a["state"] for a in store.attempts(run_id)}.get("naps") == "running",
        10,
        "the Python step to be running",
        cluster,
    )
    # When the operator cancels the run
    started = time.monotonic()
    proc = flowkit(cluster, "runs", "cancel", run_id, "--reason", "wrong input")
    took = time.monotonic() - started
    # Then the command says what was stopped and what was not, in one line after the summary
    assert proc.stdout.splitlines() == [
        f"run {run_id}: cancelled (4 step(s) cancelled, 4 attempt(s) stopped, 0 pool slot(s) given back)",
        "2 queued attempts revoked; 1 shell step's process group killed; 1 Python step on a threads "
        "pool cannot be interrupted: its result will be discarded",
    ], proc.stdout + proc.stderr
    assert took < 10
    # the shell step's command and its background child are gone at once
    assert pid_gone(child, within=3.0), "the shell step's sleep outlived the cancel"
    assert pid_gone(shell, within=3.0), "the shell step's shell outlived the cancel"
    # every attempt is cancelled, and stays so
    assert sorted(a["state"] for a in store.attempts(run_id)) == ["cancelled"] * 4
    assert store.get_run(run_id)["state"] == "cancelled"
    # and the worker logged no traceback (Celery's terminate is not called on this pool)
    wait_for(
        lambda: f"run {run_id} step waits: attempt 1 ended (failed) after an operator cancelled it" in worker.log(),
        10,
        "the shell step's outcome to be discarded",
        cluster,
    )
    log = worker.log()
    assert "Traceback" not in log and "NotImplementedError" not in log, log[-4000:]
    worker.kill()  # a warm shutdown would wait for the Python step's 30 s sleep


def test_cancel_on_a_busy_solo_worker_stops_the_shell_step_at_its_next_heartbeat(
    make_cluster, open_store, pg_url, redis_url, tmp_path
):
    # Given a shell step running on a `--pool solo` worker, which reads no control message
    # while its step runs; its heartbeat every 3 s (the stop takes two beats: 3 to 6 s, well
    # after the cancel's 1 s wait for answers)
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, CANCEL_TEST_DIR=str(tmp_path), FLOWKIT_HEARTBEAT_SECONDS="3")
    store = open_store(pg_url)
    run_id = create_runs(cluster, store, "lone_shell", 1)[0]
    cluster.scheduler()
    worker = cluster.start("worker-solo", "worker", "--pool", "solo", "-n", "solo@%h")
    for name in ("child.pid", "shell.pid"):
        wait_for(
            lambda name=name: (tmp_path / name).exists() and (tmp_path / name).read_text().strip(),
            30,
            f"{name} to be written",
            cluster,
        )
    child = int((tmp_path / "child.pid").read_text())
    # When the operator cancels the run
    proc = flowkit(cluster, "runs", "cancel", run_id)
    # Then the command says the worker did not answer, so nothing was stopped by the cancel
    assert proc.stdout.splitlines()[1] == (
        "1 running attempt not stopped: no worker answered (a solo pool answers only between "
        "steps; a shell step's command is stopped at its worker's next heartbeat); the outcome "
        "will be discarded"
    ), proc.stdout + proc.stderr
    # and the worker's heartbeat stops the command within a few seconds all the same
    assert pid_gone(child, within=10.0), "the shell step's sleep outlived the cancel on solo"
    wait_for(
        lambda: "its command's process group was stopped" in worker.log(), 10, "the worker to log the stop", cluster
    )
    assert store.get_run(run_id)["state"] == "cancelled"
    assert "Traceback" not in worker.log(), worker.log()[-4000:]
