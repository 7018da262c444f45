"""Slack and the critical path where users look: ``flowkit runs show`` (and ``--json``),
``flowkit status`` and the HTML report, from a synthetic history on both backends."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner

from flowkit import Deadline, Flow
from flowkit.cli.root import main
from flowkit.sla.view import active_deadlines, run_sla, slack_text, status_lines
from flowkit.store import sla_ops
from flowkit.store.base import utcnow

from .test_sla_store import T0, add_flow, add_history, add_run, chain_flow, work


def running_run(store, created=T0):
    """Step a done, b running since 62 s, c pending; each step ~60 s by its history."""
    return add_run(
        store,
        "nightly",
        state="running",
        created_at=created,
        steps=[("a", "success", created), ("b", "running", created + timedelta(seconds=62)), ("c", "pending", None)],
    )


def test_runs_show_gives_slack_and_critical_path(backend_store):
    spec = chain_flow(deadline=Deadline(within="6m"))
    add_flow(backend_store, spec)
    add_history(backend_store, "nightly", {"a": 60, "b": 60, "c": 60})
    sla_ops.fold_successes(backend_store, T0)  # as the scheduler's sweep does
    run_id = running_run(backend_store, created=utcnow() - timedelta(seconds=100))  # the CLI reads the real clock
    # JSON: b has 22 s left of its p90, then c's 2 s queue wait and 60 s: finish in 84 s
    result = CliRunner().invoke(main, ["--database-url", backend_store.url, "runs", "show", run_id, "--json"])
    assert result.exit_code == 0, result.output
    deadline = json.loads(result.output)["sla"]["deadline"]
    assert deadline["prediction"] == "on time"
    assert deadline["critical_path"] == ["b", "c"]
    assert 360 - 100 - 84 - 3 <= deadline["slack_seconds"] <= 360 - 100 - 84
    # Text: one line under the params
    text = CliRunner().invoke(main, ["--database-url", backend_store.url, "runs", "show", run_id]).output
    [line] = [x for x in text.splitlines() if x.startswith("deadline ")]
    assert "predicted finish" in line and "slack 2m 5" in line and "critical path b -> c" in line


def test_too_little_history_says_no_prediction(backend_store):
    spec = chain_flow(deadline=Deadline(within="6m"))
    add_flow(backend_store, spec)
    add_history(backend_store, "nightly", {"a": 60, "b": 60, "c": 60}, runs=4)
    sla_ops.fold_successes(backend_store, T0)
    run_id = running_run(backend_store)
    run = backend_store.get_run(run_id)
    sla = run_sla(backend_store, run, spec, T0 + timedelta(seconds=100))
    assert sla["deadline"]["prediction"] == "no prediction"
    assert sla["deadline"]["reason"] == "no prediction: fewer than 5 successful runs of b, c"
    assert sla["deadline"]["slack_seconds"] is None


def test_status_lists_active_runs_tightest_slack_first(backend_store):
    spec = chain_flow(deadline=Deadline(within="6m"))
    add_flow(backend_store, spec)
    add_history(backend_store, "nightly", {"a": 60, "b": 60, "c": 60})
    sla_ops.fold_successes(backend_store, T0)
    early, late = running_run(backend_store, T0 - timedelta(minutes=5)), running_run(backend_store, T0)
    rows = active_deadlines(backend_store, T0 + timedelta(seconds=100))
    assert [r["run_id"] for r in rows] == [early, late]
    assert rows[0]["prediction"] == "late" and rows[1]["prediction"] == "on time"
    lines = status_lines(rows)
    assert lines[0] == "\ndeadlines: 2 active run(s) with a deadline, 1 at risk or late"
    assert lines[1].startswith(f"  run {early} (nightly): deadline ") and "slack -" in lines[1]


def test_an_ended_run_shows_the_slack_it_finished_with(backend_store):
    spec = Flow("nightly", deadline=Deadline(within="10m")).step("a", work).spec(version="v1")
    add_flow(backend_store, spec)
    run_id = add_run(backend_store, "nightly", state="success", created_at=T0)
    with backend_store.tx("test", T0) as tx:
        from flowkit.store import tables as t

        tx.conn.execute(t.runs.update().where(t.runs.c.id == run_id).values(ended_at=T0 + timedelta(minutes=4)))
    sla = run_sla(backend_store, backend_store.get_run(run_id), spec, T0 + timedelta(hours=1))
    assert sla["deadline"]["prediction"] == "ended" and sla["deadline"]["slack_seconds"] == 360


def test_the_report_has_a_deadline_section():
    from flowkit.render.report import _deadlines

    sla = {
        "deadline": {
            "step": None,
            "deadline_at": T0,
            "done": False,
            "prediction": "late",
            "predicted_finish": T0 + timedelta(seconds=90),
            "slack_seconds": -90.0,
            "critical_path": ["b", "c"],
            "raised": ["sla_at_risk"],
        },
        "steps": [],
    }
    [head, body] = _deadlines(sla)
    assert 'id="deadline"' in head
    assert "slack -1m 30s, critical path b -&gt; c  [sla_at_risk]" in body
    assert _deadlines(None) == []


def test_slack_text():
    assert [slack_text(s) for s in (None, 0, 59.6, 125, -3600, 3725)] == ["-", "0s", "59s", "2m 5s", "-1h", "1h 2m 5s"]
