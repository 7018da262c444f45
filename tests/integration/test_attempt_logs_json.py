"""`--log-format json` on a real scheduler and worker (PostgreSQL + Redis): every line they
write is one JSON object, and the lines about a run carry its flow, run id, step and
attempt as fields. Flows: tests/dags/obslogs/logs_flows.py."""

from __future__ import annotations

import json
from typing import Any

from .procs import wait_for

DAGS = "tests/dags/obslogs"


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for raw in text.splitlines():
        if raw.strip():
            line = json.loads(raw)  # not JSON: the test fails here, naming the line
            assert isinstance(line, dict), raw
            out.append(line)
    return out


def test_scheduler_and_worker_write_json_lines_with_the_runs_fields(make_cluster, open_store, pg_url, redis_url):
    # Given a scheduler (by flag) and a worker (by FLOWKIT_LOG_FORMAT) writing JSON lines
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    store = open_store(pg_url)
    scheduler = cluster.start("scheduler", "scheduler", "--log-format", "json")
    cluster.env["FLOWKIT_LOG_FORMAT"] = "json"
    worker = cluster.worker()
    # When a run with a failed and a retried attempt ends
    run_id = cluster.cli("trigger", "logs_retry").stdout.strip()
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
    # Then every line of both is a JSON object with the fields, null where they do not apply
    keys = {"ts", "level", "logger", "message", "flow", "run_id", "step", "attempt"}
    sched_lines, worker_lines = _lines(scheduler.log()), _lines(worker.log())
    for line in sched_lines + worker_lines:
        assert keys <= set(line), line
    starting = [
        line for line in sched_lines if line["message"].startswith("scheduler ") and "starting" in line["message"]
    ]
    assert starting and all(line[k] is None for line in starting for k in ("flow", "run_id", "step", "attempt"))
    # (the run ended in the worker's finish; a scheduler line about a run carries its id too)
    about_run = [line for line in sched_lines if line["message"].startswith(f"run {run_id}")]
    assert all(line["run_id"] == run_id for line in about_run), about_run
    # the step's own log lines carry its flow, run, step and attempt (from the attempt's context)
    step_lines = {
        line["message"]: (line["flow"], line["run_id"], line["step"], line["attempt"])
        for line in worker_lines
        if line["logger"] == "flowkit.step.logs_retry.chatty"
    }
    assert step_lines == {
        "attempt 1 starting": ("logs_retry", run_id, "chatty", 1),
        "attempt 2 starting": ("logs_retry", run_id, "chatty", 2),
        "attempt 2 done": ("logs_retry", run_id, "chatty", 2),
    }, cluster.logs()
    # and so does flowkit's own line about the failed attempt
    failed = [
        line for line in worker_lines if line["message"].startswith(f"run {run_id} step chatty: attempt 1 failed")
    ]
    assert [(line["flow"], line["run_id"], line["step"], line["attempt"]) for line in failed] == [
        ("logs_retry", run_id, "chatty", 1)
    ]
    assert "RuntimeError: first attempt fails" in failed[0]["message"]
