"""Every pending step the machine ends from its counters is audited with one of the reasons of
store/machine_types.py, the same words on every path (the equivalence test compares the
paths; here, which words each case gets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.graph import Decision
from flowkit.store import machine_types as mt
from flowkit.testing import InlineHarness

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.mark.parametrize(
    "decision, skipped, not_chosen, reason",
    [
        (Decision.UPSTREAM_FAILED, 1, True, mt.UPSTREAM_FAILED),
        (Decision.SKIP, 1, True, mt.NOT_CHOSEN),
        (Decision.SKIP, 1, False, mt.UPSTREAM_SKIPPED),
        (Decision.SKIP, 0, False, mt.RULE_NOT_MET),
    ],
)
def test_reason_for_skip(decision, skipped, not_chosen, reason):
    assert mt.reason_for_skip(decision, skipped=skipped, not_chosen=not_chosen) == reason


@pytest.mark.parametrize("decision", [Decision.RUN, Decision.WAIT])
def test_a_step_that_runs_or_waits_has_no_skip_reason(decision):
    with pytest.raises(ValueError):
        mt.reason_for_skip(decision, skipped=0, not_chosen=False)


def _ended_without_running(store, run_id):  # type: ignore[no-untyped-def]
    return {
        e["step"]: e["reason"]
        for e in store.events(run_id)
        if e["action"] == "step_state"
        and e["old_state"] == "pending"
        and e["new_state"] in ("skipped", "upstream_failed")
    }


def test_each_decided_step_says_why_it_did_not_run(sqlite_store):
    sqlite_store.set_pool("db", 2)
    h = InlineHarness(sqlite_store, str(DAGS / "limits_unit"))
    run_id = h.trigger("branchy")
    h.run_until_done(run_id)
    reasons = _ended_without_running(sqlite_store, run_id)
    assert reasons == {"b": mt.NOT_CHOSEN, "after_b": mt.UPSTREAM_SKIPPED}


def test_trigger_rules_say_which_rule_and_which_upstream(sqlite_store):
    h = InlineHarness(sqlite_store, str(DAGS / "triggers"))
    run_id = h.trigger("rules")
    h.run_until_done(run_id)
    reasons = _ended_without_running(sqlite_store, run_id)
    assert reasons["all_failed__ok"] == mt.RULE_NOT_MET
    assert reasons["one_failed__ok"] == mt.RULE_NOT_MET
    assert reasons["all_success__skip"] == mt.UPSTREAM_SKIPPED
    assert reasons["all_success__bad"] == mt.UPSTREAM_FAILED
    assert set(reasons.values()) <= {mt.NOT_CHOSEN, mt.UPSTREAM_SKIPPED, mt.RULE_NOT_MET, mt.UPSTREAM_FAILED}
