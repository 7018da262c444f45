"""Fault injection: SIGKILL the scheduler or a worker mid-run. No run is lost; no finished
step runs twice."""

from __future__ import annotations

import os
from collections import Counter

from flowkit.store.sql import SqlStore

from .procs import wait_for


def _ended(store: SqlStore, run_id: str) -> str | None:
    state = store.get_run(run_id)["state"]
    return state if state in ("success", "failed") else None


def _explain(store: SqlStore, run_id: str, cluster) -> str:  # type: ignore[no-untyped-def]
    """The audit trail and the daemons' logs, for a failure message."""
    trail = "\n".join(
        f"{e['at']:%H:%M:%S.%f} {e['actor']:<24} {e['action']:<20} {e['step'] or '':<8} "
        f"{e['old_state'] or ''}->{e['new_state'] or ''} {e['reason']}"
        for e in store.events(run_id)
    )
    return f"audit trail:\n{trail}\n{cluster.logs()}"


def _step_state(store: SqlStore, run_id: str, step: str) -> str:
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}[step]


def test_scheduler_killed_mid_run_is_restarted_and_no_step_runs_twice(
    make_cluster, open_store, pg_url, redis_url, tmp_path
):
    # Given a 6-step chain (0.7 s a step) running on a scheduler and a worker
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/engine")
    scheduler = cluster.scheduler("scheduler-1")
    cluster.worker()
    log = tmp_path / "executions.log"
    run_id = cluster.cli("trigger", "chain", "-p", f"log={log}", "-p", "pause=0.7").stdout.strip()
    store = open_store(pg_url)
    wait_for(lambda: _step_state(store, run_id, "s2") == "success", 30, "s2 to succeed", cluster)
    # When the scheduler is SIGKILLed mid-run, and started again a little later
    scheduler.kill()
    # the worker finishes the step in hand (and queues the next itself); its events wait in Redis
    wait_for(lambda: _step_state(store, run_id, "s3") == "success", 30, "s3 to succeed", cluster)
    cluster.scheduler("scheduler-2")
    # Then the run completes
    ended = wait_for(lambda: _ended(store, run_id), 60, "the run to end", cluster)
    assert ended == "success", _explain(store, run_id, cluster)
    # and every step ran exactly once: one execution line, one attempt, one delivery each
    executions = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert executions == Counter({f"s{i}": 1 for i in range(1, 7)})
    attempts = store.attempts(run_id)
    assert len(attempts) == 6
    assert all(a["number"] == 1 and a["state"] == "success" for a in attempts)
    assert store.results(run_id)["s6"] == {"step": "s6", "n": 6}
    actors = {e["actor"] for e in store.events(run_id)}
    assert len([a for a in actors if a.startswith("scheduler@")]) >= 1


def _worker_of(pid: int, daemons: list) -> object:  # type: ignore[type-arg]
    """The daemon whose process group holds ``pid`` (a prefork pool child)."""
    pgid = os.getpgid(pid)
    for d in daemons:
        if d.pid == pgid:
            return d
    raise AssertionError(f"pid {pid} belongs to no worker we started")


def test_worker_killed_mid_step_is_redelivered_to_another_worker(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given two workers and a flow whose first step runs for 6 s
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/engine")
    cluster.scheduler()
    workers = [cluster.worker("worker-a"), cluster.worker("worker-b")]
    log, started = tmp_path / "long.log", tmp_path / "started"
    run_id = cluster.cli(
        "trigger", "slow", "-p", f"log={log}", "-p", f"started={started}", "-p", "seconds=6"
    ).stdout.strip()
    pid = int(wait_for(lambda: started.exists() and started.read_text(), 30, "the step to start", cluster))
    # When the worker running it is SIGKILLed, with its whole process group
    victim = _worker_of(pid, workers)
    victim.kill()
    survivor = next(w for w in workers if w is not victim)
    # Then the broker redelivers the step to the other worker and the run completes
    store = open_store(pg_url)
    ended = wait_for(lambda: _ended(store, run_id), 90, "the run to end", cluster)
    assert ended == "success", _explain(store, run_id, cluster)
    (attempt,) = store.attempts(run_id, "long")
    assert attempt["state"] == "success"
    assert attempt["deliveries"] == 2  # delivered to the victim, then to the survivor
    assert attempt["worker"].rsplit(":", 1)[1] != str(pid)  # finished by another process
    assert os.getpgid(int(attempt["worker"].rsplit(":", 1)[1])) == survivor.pid
    assert survivor.proc.poll() is None  # the survivor is still alive
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "start", "end"]
    assert any(e["action"] == "attempt_redelivered" for e in store.events(run_id))
    assert _step_state(store, run_id, "done") == "success"
