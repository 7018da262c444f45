"""Every trigger rule through the run state machine (in-process), against a table written by
hand; the same table runs on real workers in tests/integration/test_trigger_rules.py."""

from __future__ import annotations

from pathlib import Path

from flowkit.spec import TRIGGER_RULES
from flowkit.testing import InlineHarness

from ..trigger_table import EXPECTED, mismatches

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "triggers")


def test_the_table_covers_every_rule():
    assert set(EXPECTED) == set(TRIGGER_RULES)


def test_every_rule_ends_each_mix_of_upstreams_as_its_name_says(sqlite_store):
    h = InlineHarness(sqlite_store, DAGS)
    run_id = h.trigger("rules")
    assert h.run_until_done(run_id) == "failed"  # "bad" failed
    states = {s["step"]: s["state"] for s in sqlite_store.step_runs(run_id)}
    assert (states["ok"], states["bad"], states["skip"]) == ("success", "failed", "skipped")
    assert mismatches(states) == []
    # a step that did not run has no attempt; one that ran has exactly one
    attempts = {a["step"] for a in sqlite_store.attempts(run_id)}
    for rule, mixes in EXPECTED.items():
        for mix, want in mixes.items():
            assert (f"{rule}__{mix}" in attempts) == (want == "success"), (rule, mix)
