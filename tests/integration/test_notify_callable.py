"""A Python callable in notify= on real services: the scheduler daemon's sender hands the
failed run's notifications to a worker through the callbacks outbox, and the worker calls the
flow's function with each (PostgreSQL, Redis, a real scheduler and worker)."""

from __future__ import annotations

import json
from pathlib import Path

from flowkit.loading.sync import sync_dags
from flowkit.notify.sender import list_notifications
from flowkit.spec import resolve_params

from .limits_support import explain, wait_runs_ended
from .procs import wait_for

FLOW = """
import json
import os

from flowkit import Flow
from flowkit.notify import Call


def boom(ctx):
    raise RuntimeError("warehouse API down")


def page_oncall(note):
    with open({notes!r}, "a") as out:
        out.write(json.dumps({{"kind": note["kind"], "run_id": note["run_id"], "pid": os.getpid()}}) + "\\n")


notify_call = Flow("notify_call", notify=[Call(page_oncall, on="run_failed")]).step("only", boom)
"""


def test_a_callable_notifier_runs_on_a_worker(pg_url, redis_url, make_cluster, open_store, tmp_path: Path) -> None:
    # Given a failing flow whose notify= calls a Python function on run_failed
    notes = tmp_path / "notes.jsonl"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "notify_call.py").write_text(FLOW.format(notes=str(notes)))
    cluster = make_cluster(pg_url, redis_url, dags=str(dags))
    store = open_store(pg_url)
    sync_dags(store, str(dags))
    spec = store.flow_spec("notify_call")
    run_id = str(store.create_run(spec, resolve_params(spec, {}), actor="test"))
    # When a scheduler and a worker run it
    scheduler = cluster.scheduler()
    cluster.worker("worker-a", concurrency=1)
    assert wait_runs_ended(store, [run_id], 60, cluster) == {run_id: "failed"}, explain(store, [run_id], cluster)
    # Then the function was called once, in the worker's process (not the scheduler's), with the failure
    wait_for(lambda: notes.exists() and notes.read_text().strip(), 30, "the callable notifier to be called", cluster)
    wait_for(
        lambda: any(e["action"] == "callback_ran" for e in store.events(run_id)),
        30,
        "the call to be recorded",
        cluster,
    )
    calls = [json.loads(line) for line in notes.read_text().splitlines()]
    assert [(c["kind"], c["run_id"]) for c in calls] == [("run_failed", run_id)]
    assert calls[0]["pid"] != scheduler.pid
    [ran] = [e for e in store.events(run_id) if e["action"] == "callback_ran"]
    assert ran["reason"] == "notify= callable flowkit_dags.notify_call:page_oncall for run_failed"
    assert not ran["actor"].startswith("scheduler"), ran["actor"]  # recorded by the worker
    # And the outbox row was delivered (handed over) once
    [failed] = [n for n in list_notifications(store, run_id) if n["kind"] == "run_failed"]
    assert failed["outcome"] == "delivered"
    assert [a["notifier"] for a in failed["delivery_attempts"]] == ["callable flowkit_dags.notify_call:page_oncall"]
