"""Every trigger rule through the run state machine (in-process, on SQLite and PostgreSQL),
against a table written by hand; the same table runs on real workers in tests/integration/test_trigger_rules.py."""

from __future__ import annotations

from pathlib import Path

from flowkit.spec import TRIGGER_RULES
from flowkit.store.machine_types import RULE_NOT_MET, UPSTREAM_SKIPPED

from ..store_backends import inline_harness
from ..trigger_table import EXPECTED, mismatches

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "triggers")


def test_the_table_covers_every_rule():
    assert set(EXPECTED) == set(TRIGGER_RULES)


def test_every_rule_ends_each_mix_of_upstreams_as_its_name_says(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("rules")
    assert h.run_until_done(run_id) == "failed"  # "bad" failed
    states = {s["step"]: s["state"] for s in backend_store.step_runs(run_id)}
    assert (states["ok"], states["bad"], states["skip"]) == ("success", "failed", "skipped")
    assert mismatches(states) == []
    # a step that did not run has no attempt; one that ran has exactly one
    attempts = {a["step"] for a in backend_store.attempts(run_id)}
    for rule, mixes in EXPECTED.items():
        for mix, want in mixes.items():
            assert (f"{rule}__{mix}" in attempts) == (want == "success"), (rule, mix)


def test_a_skipped_step_is_audited_with_the_same_reason_whichever_path_decided(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("rules")
    assert h.run_until_done(run_id) == "failed"
    reasons = {
        e["step"]: e["reason"]
        for e in backend_store.events(run_id)
        if e["action"] == "step_state" and (e["old_state"], e["new_state"]) == ("pending", "skipped")
    }
    assert {"all_failed__ok", "one_failed__ok", "all_success__skip"} <= set(reasons)
    # the same words whichever path decided (the generic machine, or PostgreSQL's fast finish)
    assert (reasons["all_failed__ok"], reasons["one_failed__ok"]) == (RULE_NOT_MET, RULE_NOT_MET), reasons
    assert reasons["all_success__skip"] == UPSTREAM_SKIPPED, reasons


def test_the_readme_says_how_none_failed_differs_from_airflows_rule_of_that_name():
    from flowkit.graph import Decision, decide_counts

    # every upstream skipped: Airflow's none_failed runs; flowkit's skips, as its README says
    assert decide_counts("none_failed", 2, 0, 0, 2) == Decision.SKIP
    assert decide_counts("none_failed", 2, 1, 0, 1) == Decision.RUN
    assert decide_counts("none_failed", 2, 1, 1, 0) == Decision.UPSTREAM_FAILED
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert (
        "Unlike Airflow's rule of the same name, flowkit's `none_failed` is `none_failed_min_one_success`"
    ) in readme
    assert "it is skipped when every upstream was skipped" in readme
