"""Retrying a compensated run, as functions of a store: run on SQLite and PostgreSQL by
tests/unit/test_saga_approvals.py (backend_store) and on PostgreSQL (the pg_fast finish
included) by tests/integration/test_saga_approvals.py. Flows: tests/dags/saga/flows.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit.errors import ActionRefused
from flowkit.testing import InlineHarness

from ..store_backends import inline_harness

SAGA_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "saga")


def _states(store: Any, run_id: str) -> dict[str, str]:
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def _numbers(store: Any, run_id: str, step: str) -> list[int]:
    return [a["number"] for a in store.attempts(run_id, step)]


def _compensated_run(store: Any, flag: Path) -> tuple[InlineHarness, str]:
    h = inline_harness(store, SAGA_DAGS)
    run_id = h.trigger("saga_retry", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "failed"
    assert store.get_run(run_id)["outcome"] == "compensated"
    return h, run_id


def retry_redoes_the_undone_steps_before_their_downstream(store: Any, tmp_path: Path) -> None:
    # Given a run that failed at ship and compensated reserve, charge and notify
    flag = tmp_path / "flag"
    h, run_id = _compensated_run(store, flag)
    # When the cause is fixed and the run retried
    flag.write_text("go")
    result = h.act(store.retry_run(run_id, by="ann", reason="carrier back"))
    assert result.summary == (f"run {run_id}: running again; 4 step(s) back to pending: reserve, charge, notify, ship")
    # Then it is running with no outcome, and the compensation rows left the run
    run = store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("running", None)
    assert not [s for s in _states(store, run_id) if s.endswith(":compensate")]
    assert h.run_until_done(run_id) == "success"
    # ... the undone steps ran again, each before its downstream; audit (never undone) did not
    assert _states(store, run_id) == {s: "success" for s in ("reserve", "charge", "notify", "audit", "ship")}
    assert {s: _numbers(store, run_id, s) for s in ("reserve", "charge", "notify", "ship", "audit")} == {
        "reserve": [1, 2],
        "charge": [1, 2],
        "notify": [1, 2],
        "ship": [1, 2],
        "audit": [1],
    }
    last = {a["step"]: a for a in store.attempts(run_id) if a["number"] == 2}
    assert last["reserve"]["ended_at"] <= last["charge"]["started_at"]
    assert last["reserve"]["ended_at"] <= last["notify"]["started_at"]
    assert last["charge"]["ended_at"] <= last["ship"]["started_at"]
    # ... and the run ended success with no outcome: nothing of it stands undone
    run = store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("success", None)
    # The history stays: the first compensation's attempts and events
    assert _numbers(store, run_id, "reserve:compensate") == [1]
    reset = [e["step"] for e in store.events(run_id) if e["action"] == "compensation_reset"]
    assert sorted(reset) == ["charge:compensate", "notify:compensate", "reserve:compensate"]


def a_second_failure_compensates_again(store: Any, tmp_path: Path) -> None:
    # Given a compensated run, retried without fixing the cause
    flag = tmp_path / "flag"
    h, run_id = _compensated_run(store, flag)
    h.act(store.retry_run(run_id, by="ann"))
    # Then it fails again and compensates again: attempt numbers go on
    assert h.run_until_done(run_id) == "failed"
    run = store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    st = _states(store, run_id)
    assert {st[n] for n in ("reserve:compensate", "charge:compensate", "notify:compensate")} == {"success"}
    assert _numbers(store, run_id, "charge:compensate") == [1, 2]
    assert _numbers(store, run_id, "reserve") == [1, 2]
    started = [e for e in store.events(run_id) if e["action"] == "compensation_started"]
    assert len(started) == 2
    assert store.results(run_id)["charge:compensate"] == {"undid": "charge", "result": {"made": "charge"}}


def a_half_undone_step_is_refused_until_named_or_marked(store: Any, tmp_path: Path) -> None:
    # Given first -> second -> third (fails); second's compensation failed
    flag = tmp_path / "flag"
    h = inline_harness(store, SAGA_DAGS)
    run_id = h.trigger("saga_retry_comp_fails", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "failed"
    assert store.get_run(run_id)["outcome"] == "compensation failed"
    # When retried, it is refused in one line with the fixes, and nothing changes
    with pytest.raises(ActionRefused) as refused:
        store.retry_run(run_id, by="ann")
    assert str(refused.value) == (
        f"run {run_id}: the compensation of second did not complete, so its effect may be half "
        f"undone; check it, then `flowkit runs retry {run_id} --step second --step third` runs it "
        f"again, or `flowkit runs mark {run_id} second:compensate skipped` keeps it as it stands"
    )
    assert store.get_run(run_id)["state"] == "failed"
    # When the operator marks the failed compensation skipped (second's effect stands)
    h.act(store.mark_step(run_id, "second:compensate", "skipped", by="ann", reason="checked by hand"))
    assert h.run_until_done(run_id) == "failed"
    run = store.get_run(run_id)
    assert run["outcome"] == "compensated"  # decided again from the compensation rows
    # Then a retry redoes first (undone) and third, and keeps second as it stands
    flag.write_text("go")
    h.act(store.retry_run(run_id, by="ann"))
    assert h.run_until_done(run_id) == "success"
    assert {s: _numbers(store, run_id, s) for s in ("first", "second", "third")} == {
        "first": [1, 2],
        "second": [1],
        "third": [1, 2],
    }
    assert store.get_run(run_id)["outcome"] is None


def naming_the_half_undone_step_runs_it_again(store: Any, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    h = inline_harness(store, SAGA_DAGS)
    run_id = h.trigger("saga_retry_comp_fails", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "failed"
    flag.write_text("go")
    h.act(store.retry_run(run_id, steps=["second", "third"], by="ann"))
    assert h.run_until_done(run_id) == "success"
    assert {s: _numbers(store, run_id, s) for s in ("first", "second", "third")} == {
        "first": [1, 2],
        "second": [1, 2],
        "third": [1, 2],
    }
    assert store.get_run(run_id)["outcome"] is None


def marking_the_failed_step_of_a_compensated_run_redoes_the_undone_steps(store: Any, tmp_path: Path) -> None:
    # Given a compensated run; ship is then done by hand and marked success
    flag = tmp_path / "flag"
    h, run_id = _compensated_run(store, flag)
    h.act(store.mark_step(run_id, "ship", "success", by="ann", reason="shipped by hand"))
    # Then the undone steps run again (ship does not: it is marked), and the run succeeds
    assert h.run_until_done(run_id) == "success"
    assert {s: _numbers(store, run_id, s) for s in ("reserve", "charge", "notify", "ship")} == {
        "reserve": [1, 2],
        "charge": [1, 2],
        "notify": [1, 2],
        "ship": [1],
    }
    assert (store.get_run(run_id)["outcome"]) is None


CASES = [
    retry_redoes_the_undone_steps_before_their_downstream,
    a_second_failure_compensates_again,
    a_half_undone_step_is_refused_until_named_or_marked,
    naming_the_half_undone_step_runs_it_again,
    marking_the_failed_step_of_a_compensated_run_redoes_the_undone_steps,
]
