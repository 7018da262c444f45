"""The operator commands through click's CliRunner: flows pause/unpause, runs cancel/retry/mark.

What each action does to the store is in test_operator_actions.py; here: output, the audit
trail in `runs show --events`, paused flows in `dags list` and `status`, one-line refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main

OPERATOR = Path(__file__).resolve().parents[1] / "dags" / "operator"


@pytest.fixture
def cli(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(
            main, ["--database-url", db, "--broker-url", "memory://", "--dags-folder", str(OPERATOR), *args]
        )

    invoke.db = db  # type: ignore[attr-defined]
    return invoke


def test_pause_trigger_unpause_and_the_audit_trail(cli):
    out = cli("flows", "pause", "single", "--by", "ann", "--reason", "db maintenance")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == (
        'flow "single": paused; 0 queued run(s) wait for `flowkit flows unpause single`, 0 running run(s) finish'
    )
    # a triggered run stays queued, and the CLI says why
    trig = cli("trigger", "single")
    assert trig.exit_code == 0, trig.output
    run_id = trig.stdout.strip()
    assert (
        f'warning: flow "single" is paused: run {run_id} stays queued until `flowkit flows unpause single`'
    ) in trig.stderr
    listed = cli("dags", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("single "))
    assert " paused " in row
    assert {f["name"]: f["paused"] for f in json.loads(cli("dags", "list", "--json").stdout)["flows"]}["single"]
    status = cli("status", "--no-broker")
    assert "paused flows: single (`flowkit flows unpause FLOW`)" in status.stdout
    assert cli("flows", "unpause", "single", "--by", "bob").exit_code == 0
    # the run's audit trail shows both, with who and why
    shown = cli("runs", "show", run_id[:8], "--events")
    assert shown.exit_code == 0, shown.output
    trail = shown.stdout.split("AUDIT TRAIL", 1)[1]
    assert "ann" in trail and "operator_pause" in trail and "paused by ann: db maintenance" in trail
    assert "bob" in trail and "operator_unpause" in trail
    assert " flow " in trail


def test_cancel_retry_and_mark_print_one_line_each_and_refuse_in_one_line(cli):
    from flowkit.store.sql import SqlStore

    run_id = cli("trigger", "broken").stdout.strip()
    cancelled = cli("runs", "cancel", run_id, "--by", "ann", "--reason", "wrong day")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.strip() == (
        f"run {run_id}: cancelled (4 step(s) cancelled, 0 attempt(s) stopped, 0 pool slot(s) given back)"
    )
    again = cli("runs", "cancel", run_id)
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        f"error: run {run_id} is already cancelled; nothing to cancel "
        f"(`flowkit runs retry {run_id}` runs its failed steps again)"
    )
    mark = cli("runs", "mark", run_id, "bad", "success")
    assert mark.exit_code == 1 and mark.stderr.count("\n") == 1
    assert "is cancelled; `flowkit runs retry" in mark.stderr
    retried = cli("runs", "retry", run_id, "--by", "ann")
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.strip() == (
        f"run {run_id}: running again; 4 step(s) back to pending: first, bad, after_bad, beside"
    )
    store = SqlStore(cli.db)
    try:
        assert store.get_run(run_id)["state"] == "running"
        assert {s["state"] for s in store.step_runs(run_id)} == {"scheduled", "pending"}
    finally:
        store.dispose()
    marked = cli("runs", "mark", run_id, "bad", "skipped", "--reason", "not needed today")
    assert marked.exit_code == 0, marked.output
    assert marked.stdout.startswith(f"run {run_id} step bad: pending -> skipped; run running")
    bad_state = cli("runs", "mark", run_id, "bad", "failed")
    assert bad_state.exit_code == 2  # click's usage error: only success or skipped
    assert cli("runs", "retry", run_id, "--downstream").exit_code == 2
    events = json.loads(cli("runs", "show", run_id, "--json").stdout)["events"]
    ops = [(e["action"], e["actor"]) for e in events if e["action"].startswith("operator_")]
    assert [a for a, _ in ops] == ["operator_cancel", "operator_retry", "operator_mark"]
    assert ops[0][1] == ops[1][1] == "ann"


def test_mark_with_a_result_checks_it_in_one_line_and_keeps_it_in_the_audit_trail(cli, monkeypatch):
    from flowkit.store.sql import SqlStore
    from flowkit.testing import InlineHarness

    # Given a failed run of handoff (bad failed; uses, which reads bad's result, did not run)
    store = SqlStore(cli.db)
    store.upgrade()
    try:
        h = InlineHarness(store, str(OPERATOR))
        run_id = h.trigger("handoff")
        assert h.run_until_done(run_id) == "failed"
    finally:
        store.dispose()
    # When the result is not JSON, or too big: one line with the fix, nothing changed
    bad_json = cli("runs", "mark", run_id, "bad", "success", "--result", "{rows: 3}")
    assert bad_json.exit_code == 1 and bad_json.stderr.count("\n") == 1
    assert bad_json.stderr.startswith("error: --result is not JSON (Expecting property name")
    assert "pass a JSON value, e.g. --result '{\"rows\": 3}' or --result null" in bad_json.stderr
    monkeypatch.setenv("FLOWKIT_MAX_RESULT_BYTES", "8")
    too_big = cli("runs", "mark", run_id, "bad", "success", "--result", '{"rows": 3}')
    assert too_big.exit_code == 1 and too_big.stderr.count("\n") == 1
    assert "--result is 11 bytes, over the 8-byte cap (FLOWKIT_MAX_RESULT_BYTES)" in too_big.stderr
    monkeypatch.delenv("FLOWKIT_MAX_RESULT_BYTES")
    # When it is good: the step is marked and the audit trail quotes the result
    marked = cli("runs", "mark", run_id, "bad", "success", "--result", '{"rows": 3}', "--by", "ann")
    assert marked.exit_code == 0, marked.output
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    reasons = [e["reason"] for e in shown["events"] if e["action"] == "operator_mark"]
    assert reasons == ['marked success by ann; result: {"rows": 3}']


def test_runs_show_tells_the_truth_about_a_retried_compensated_run(tmp_path):
    from flowkit.store.sql import SqlStore
    from flowkit.testing import InlineHarness

    saga_dags = Path(__file__).resolve().parents[1] / "dags" / "saga"
    db = f"sqlite:///{tmp_path / 'saga.db'}"

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(
            main, ["--database-url", db, "--broker-url", "memory://", "--dags-folder", str(saga_dags), *args]
        )

    # Given a run that failed at ship and was compensated
    flag = tmp_path / "flag"
    store = SqlStore(db)
    store.upgrade()
    h = InlineHarness(store, str(saga_dags))
    run_id = h.trigger("saga_retry", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "failed"
    assert "state failed (compensated)" in cli("runs", "show", run_id).stdout
    # When the cause is fixed and the run retried through the CLI, and worked to its end
    flag.write_text("go")
    retried = cli("runs", "retry", run_id, "--by", "ann")
    assert retried.exit_code == 0, retried.output
    h.scheduler.step_once(max_wait=0)
    assert h.run_until_done(run_id) == "success"
    store.dispose()
    # Then runs show says success, with no outcome, in text and JSON
    shown = cli("runs", "show", run_id)
    assert "state success " in shown.stdout and "compensated" not in shown.stdout.split("\n")[0]
    details = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert (details["state"], details["outcome"]) == ("success", None)
