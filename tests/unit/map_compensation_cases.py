"""Compensating map steps, as functions of a store: run on SQLite by tests/unit/test_map.py
and on PostgreSQL (the pg_fast finish included) by tests/integration/test_map.py.
Flow: compensated_map in tests/dags/maps/flows.py (prepare -> work over [1, 2, 3] -> finish)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from flowkit.errors import ActionRefused

from ..store_backends import inline_harness

MAP_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "maps")


def _compensations_in_order(store: Any, run_id: str) -> list[str]:
    """The compensation attempts, by start."""
    atts = [a for a in store.attempts(run_id) if a["step"].endswith(":compensate")]
    return [a["step"] for a in sorted(atts, key=lambda a: a["started_at"])]


def _ran_one_after_another(store: Any, run_id: str, names: list[str]) -> None:
    atts = {a["step"]: a for a in store.attempts(run_id)}
    for before, after in itertools.pairwise(names):
        assert atts[before]["ended_at"] <= atts[after]["started_at"], (before, after)


def a_partly_failed_map_compensates_its_succeeded_instances_last_first(store: Any) -> None:
    # Given work over [1, 2, 3] where item 3 fails: work[0] and work[1] succeeded
    h = inline_harness(store, MAP_DAGS)
    run_id = h.trigger("compensated_map", {"bad": 3})
    assert h.run_until_done(run_id) == "failed"
    # Then each succeeded instance was compensated, the highest index first, then prepare
    order = ["work[1]:compensate", "work[0]:compensate", "prepare:compensate"]
    assert _compensations_in_order(store, run_id) == order
    _ran_one_after_another(store, run_id, order)
    states = {s["step"]: s["state"] for s in store.step_runs(run_id)}
    assert "work[2]:compensate" not in states  # the failed instance has nothing to undo
    assert {states[n] for n in [*order, "work:compensate"]} == {"success"}
    # ... each named the instance it undid, with its result, element and index
    results = store.results(run_id)
    assert results["work[1]:compensate"] == {"undid": "work[1]", "result": {"did": 2}, "item": 2, "index": 1}
    assert results["work[0]:compensate"] == {"undid": "work[0]", "result": {"did": 1}, "item": 1, "index": 0}
    assert results["prepare:compensate"]["result"] == [1, 2, 3]
    run = store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    ended = [e for e in store.events(run_id) if e["action"] == "run_state" and e["new_state"] == "failed"]
    assert ended[-1]["reason"] == (
        "failed steps: work; compensated: work[1]:compensate, work[0]:compensate, prepare:compensate"
    )
    assert all(used == held for used, held in store.ledger_balance().values())


def a_map_that_succeeded_is_compensated_per_instance_when_a_later_step_fails(store: Any) -> None:
    # Given every instance of work succeeded, and finish (after work) fails
    h = inline_harness(store, MAP_DAGS)
    run_id = h.trigger("compensated_map", {"bad": 0, "late": True})
    assert h.run_until_done(run_id) == "failed"
    # Then every instance is compensated, the highest index first, then prepare
    order = ["work[2]:compensate", "work[1]:compensate", "work[0]:compensate", "prepare:compensate"]
    assert _compensations_in_order(store, run_id) == order
    _ran_one_after_another(store, run_id, order)
    assert store.results(run_id)["work[2]:compensate"]["undid"] == "work[2]"
    assert store.get_run(run_id)["outcome"] == "compensated"


def a_compensated_map_step_runs_again_when_the_run_is_retried(store: Any) -> None:
    # Given the partly failed map, compensated
    h = inline_harness(store, MAP_DAGS)
    run_id = h.trigger("compensated_map", {"bad": 3})
    assert h.run_until_done(run_id) == "failed"
    # When retried (item 3 still fails): prepare and work run again, and compensate again
    h.act(store.retry_run(run_id, by="ann"))
    assert h.run_until_done(run_id) == "failed"
    assert [a["number"] for a in store.attempts(run_id, "work[1]:compensate")] == [1, 2]
    assert [a["number"] for a in store.attempts(run_id, "work[1]")] == [1, 2]
    assert [a["number"] for a in store.attempts(run_id, "prepare")] == [1, 2]
    assert store.get_run(run_id)["outcome"] == "compensated"


def a_failed_instance_compensation_is_named_and_the_others_still_run(store: Any) -> None:
    # Given work[0] and work[1] succeeded (item 3 failed), and undoing item 2 fails
    h = inline_harness(store, MAP_DAGS)
    run_id = h.trigger("compensated_map", {"bad": 3, "undo_bad": 2})
    assert h.run_until_done(run_id) == "failed"
    # Then work[0] and prepare are still undone, after it
    order = ["work[1]:compensate", "work[0]:compensate", "prepare:compensate"]
    assert _compensations_in_order(store, run_id) == order
    states = {s["step"]: s["state"] for s in store.step_runs(run_id)}
    assert [states[n] for n in ["work:compensate", *order]] == ["failed", "failed", "success", "success"]
    # ... and the outcome and its reason name the instance whose compensation failed
    assert store.get_run(run_id)["outcome"] == "compensation failed"
    ended = [e for e in store.events(run_id) if e["action"] == "run_state" and e["new_state"] == "failed"]
    assert ended[-1]["reason"] == (
        "failed steps: work; compensation failed: work[1]:compensate "
        "(compensated: work[0]:compensate, prepare:compensate)"
    )
    # A retry is refused until someone looked: work may be half undone
    with pytest.raises(ActionRefused, match=f"run {run_id}: the compensation of work did not complete"):
        store.retry_run(run_id, by="ann")


CASES = [
    a_partly_failed_map_compensates_its_succeeded_instances_last_first,
    a_map_that_succeeded_is_compensated_per_instance_when_a_later_step_fails,
    a_compensated_map_step_runs_again_when_the_run_is_retried,
    a_failed_instance_compensation_is_named_and_the_others_still_run,
]
