"""The scheduler's state machine and the worker's attempt handling, in-process on SQLite and
PostgreSQL (``backend_store``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from flowkit.errors import InvalidParamError
from flowkit.execution.attempt import run_attempt
from flowkit.scheduler.loop import Scheduler
from flowkit.store import tables as t
from flowkit.testing import FakeClock, InlineDispatcher

from ..store_backends import inline_harness

ROOT = Path(__file__).resolve().parents[2]
ENGINE_DAGS = str(ROOT / "tests" / "dags" / "engine")
EXAMPLE_DAGS = str(ROOT / "dags")


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def attempts_by_step(store, run_id):  # type: ignore[no-untyped-def]
    out: dict[str, list[dict]] = {}
    for a in store.attempts(run_id):
        out.setdefault(a["step"], []).append(a)
    return out


def test_orders_in_stock_takes_the_reserve_path(backend_store, tmp_path):
    # Given the example orders flow and a fresh work folder
    h = inline_harness(backend_store, EXAMPLE_DAGS)
    # When the default order (2 widgets, 1 gizmo: total 19.50, under the approval threshold) runs
    run_id = h.trigger("orders", {"workdir": str(tmp_path)})
    # Then it succeeds through reserve; the back-order branch and the approval are skipped
    assert h.run_until_done(run_id) == "success"
    st = states(backend_store, run_id)
    assert st["backorder"] == st["approve_large"] == "skipped"
    assert {
        st[s]
        for s in (
            "receive",
            "check_inventory",
            "route",
            "reserve",
            "invoice",
            "review",
            "pack",
            "ship",
            "ship[0]",
            "ship[1]",
            "notify_customer",
            "update_accounting",
        )
    } == {"success"}
    assert not [s for s in st if s.endswith(":compensate")]  # nothing to undo
    results = backend_store.results(run_id)
    assert results["route"] == ["reserve"]
    assert results["review"] == []
    assert results["invoice"]["total"] == pytest.approx(19.5)
    assert [p["item"] for p in results["pack"]] == ["widget", "gizmo"]
    assert [r["line"] for r in results["ship"]] == [1, 2]  # one shipment per order line, in order
    assert results["notify_customer"]["message"] == "Your order ships in 2 parcel(s) by ground."
    assert results["update_accounting"] == {"posted": pytest.approx(19.5), "ledger_entries": 1}
    assert all(len(a) == 1 for a in attempts_by_step(backend_store, run_id).values())
    assert backend_store.get_run(run_id)["state"] == "success"


def test_orders_out_of_stock_takes_the_backorder_path(backend_store, tmp_path):
    h = inline_harness(backend_store, EXAMPLE_DAGS)
    run_id = h.trigger("orders", {"workdir": str(tmp_path), "lines": '[{"item": "gadget", "quantity": 1}]'})
    assert h.run_until_done(run_id) == "success"
    st = states(backend_store, run_id)
    assert st["backorder"] == "success"
    assert {st[s] for s in ("reserve", "invoice", "review", "approve_large", "pack", "ship")} == {"skipped"}
    # the join after the branch runs (trigger none_failed)
    assert st["notify_customer"] == "success"
    assert "back-ordered" in backend_store.results(run_id)["notify_customer"]["message"]
    assert backend_store.results(run_id)["check_inventory"]["short"] == {"gadget": 1}


def test_failing_step_retries_with_growing_delays_then_fails_downstream(backend_store):
    # Given a step that always fails with retries=2 and a 1 s backoff
    clock = FakeClock()
    h = inline_harness(backend_store, ENGINE_DAGS, clock=clock)
    run_id = h.trigger("failing")
    # When the run is worked to the end (the fake clock jumps over each retry timer)
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    # Then there were 3 attempts, the waits grew, and downstream steps are upstream_failed
    flaky = attempts_by_step(backend_store, run_id)["flaky"]
    assert [a["number"] for a in flaky] == [1, 2, 3]
    assert all(a["state"] == "failed" and "disk full" in a["error"] for a in flaky)
    import re

    waits = [
        float(m.group(1))
        for e in backend_store.events(run_id)
        if (m := re.search(r"retrying in ([0-9.]+) s", e["reason"]))
    ]
    assert len(waits) == 2
    assert 0.7 <= waits[0] <= 1.1, waits  # 1 s with up to 25 % jitter
    assert 1.4 <= waits[1] <= 2.1, waits  # 2 s with up to 25 % jitter
    assert waits[1] > waits[0]
    st = states(backend_store, run_id)
    assert st["flaky"] == "failed"
    assert st["after_flaky"] == st["after_after"] == "upstream_failed"
    assert st["independent"] == "success"
    # the audit trail says why
    reasons = [e["reason"] for e in backend_store.events(run_id) if e["step"] == "flaky"]
    assert any("attempt 1 of 3 failed; retrying in" in r for r in reasons)
    assert any("attempt 3 of 3 failed: RuntimeError: disk full" in r for r in reasons)


def test_result_over_the_cap_fails_with_size_and_fix(backend_store):
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("big_result")
    assert h.run_until_done(run_id) == "failed"
    (a,) = attempts_by_step(backend_store, run_id)["huge"]
    assert "result is 300,002 bytes, over the 262,144-byte cap (FLOWKIT_MAX_RESULT_BYTES)" in a["error"]
    assert "write the data elsewhere" in a["error"] and 'return flowkit.Ref("s3://...")' in a["error"]
    assert states(backend_store, run_id)["next"] == "upstream_failed"


def test_skip_and_retry_signals_and_all_done_trigger(backend_store):
    clock = FakeClock()
    h = inline_harness(backend_store, ENGINE_DAGS, clock=clock)
    run_id = h.trigger("signals")
    assert h.run_until_done(run_id, advance=clock.advance) == "success"
    st = states(backend_store, run_id)
    assert st["skipper"] == "skipped" and st["after_skip"] == "skipped"
    assert st["cleanup"] == "success"  # all_done runs whatever happened upstream
    retry_attempts = attempts_by_step(backend_store, run_id)["asks_retry"]
    assert [a["state"] for a in retry_attempts] == ["failed", "success"]
    assert retry_attempts[0]["retry_delay"] == 0.5
    assert backend_store.results(run_id)["asks_retry"] == {"attempt": 2}


def test_non_json_result_and_bad_branch_choice_fail_clearly(backend_store):
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("odd_results")
    assert h.run_until_done(run_id) == "failed"
    by_step = attempts_by_step(backend_store, run_id)
    assert "the result is not JSON-serialisable (object is not JSON-serialisable)" in by_step["not_json"][0]["error"]
    assert (
        "branch step bad_branch returned 'nowhere'; it must return the name (or a list of "
        "names) of its downstream steps: x"
    ) in by_step["bad_branch"][0]["error"]
    assert states(backend_store, run_id)["x"] == "upstream_failed"


def test_trigger_rejects_bad_params(backend_store, tmp_path):
    h = inline_harness(backend_store, EXAMPLE_DAGS)
    with pytest.raises(InvalidParamError, match='flow "orders" has no param "custmer". Did you mean "customer"'):
        h.trigger("orders", {"custmer": "1"})
    with pytest.raises(InvalidParamError, match="param \"customer\": 'lots' is not an int"):
        h.trigger("orders", {"customer": "lots"})


def test_redelivered_finished_attempt_is_acknowledged_not_rerun(backend_store, tmp_path):
    h = inline_harness(backend_store, ENGINE_DAGS)
    log = tmp_path / "runs.log"
    run_id = h.trigger("chain", {"log": str(log)})
    first = h.dispatcher.sent[0]
    assert h.run_until_done(run_id) == "success"
    # When the broker delivers the finished first attempt again
    outcome = run_attempt(h.runtime, first.run_id, first.step.name, first.attempt)
    # Then the worker skips it and the step ran exactly once
    assert outcome == "done"
    lines = log.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == [f"s{i}" for i in range(1, 7)]


def test_duplicate_delivery_while_running_is_skipped_and_lost_worker_is_taken_over(backend_store, tmp_path):
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    item = h.dispatcher.sent.pop(0)
    key = dict(run_id=run_id, step="s1", number=1)
    # Given worker A claimed the attempt and is heart-beating
    claim = backend_store.claim_attempt(**key, worker="A", lost_after=30, max_deliveries=3)
    assert claim.outcome == "run"
    # When a duplicate delivery reaches worker B, B leaves it alone
    assert backend_store.claim_attempt(**key, worker="B", lost_after=30, max_deliveries=3).outcome == "duplicate"
    # When A goes silent past the lost-after window, B takes the attempt over
    with backend_store.tx("test") as tx:
        tx.conn.execute(
            update(t.attempts).where(t.attempts.c.step == "s1").values(heartbeat_at=tx.now - timedelta(seconds=60))
        )
    took = backend_store.claim_attempt(**key, worker="B", lost_after=30, max_deliveries=3)
    assert took.outcome == "run" and took.deliveries == 2
    # and A, back from the dead, can no longer record an outcome
    from flowkit.states import AttemptState

    assert not backend_store.finish_attempt(**key, worker="A", state=AttemptState.SUCCESS, result_json="1")
    assert backend_store.finish_attempt(**key, worker="B", state=AttemptState.SUCCESS, result_json='{"n": 1}')
    actions = [e["action"] for e in backend_store.events(run_id)]
    assert "attempt_redelivered" in actions
    assert item.task_id == backend_store.attempts(run_id, "s1")[0]["task_id"]


def test_attempt_lost_too_often_fails_as_poison(backend_store, tmp_path):
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    h.dispatcher.sent.clear()
    key = dict(run_id=run_id, step="s1", number=1)
    for n in range(3):
        assert backend_store.claim_attempt(**key, worker=f"w{n}", lost_after=30, max_deliveries=3).outcome == "run"
        with backend_store.tx("test") as tx:
            tx.conn.execute(update(t.attempts).values(heartbeat_at=tx.now - timedelta(seconds=60)))
    claim = backend_store.claim_attempt(**key, worker="w3", lost_after=30, max_deliveries=3)
    assert claim.outcome == "poison"
    assert "poison: the worker running this attempt was lost 3 times" in claim.detail
    h.scheduler.evaluate(run_id)
    assert states(backend_store, run_id)["s1"] == "failed"
    assert backend_store.get_run(run_id)["state"] == "failed"


def test_restarted_scheduler_republishes_unstarted_attempts_and_finishes_the_run(backend_store, tmp_path):
    # Given a scheduler that wrote "queued" but died before publishing
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    lost = h.dispatcher.sent.pop(0)
    # When a new scheduler starts on the same store
    fresh = InlineDispatcher()
    new = Scheduler(backend_store, fresh, h.events, sweep_seconds=3600, name="scheduler@2")
    new.start()
    # Then it publishes the same attempt again (same deterministic task id)
    assert [(d.step.name, d.attempt, d.task_id) for d in fresh.sent] == [("s1", 1, lost.task_id)]
    h.scheduler, h.dispatcher, h.runtime.dispatcher = new, fresh, fresh
    assert h.run_until_done(run_id) == "success"
    assert len(backend_store.attempts(run_id)) == 6
    assert any(e["action"] == "lease_expired" for e in backend_store.events(run_id))


def test_every_transition_is_in_the_audit_trail(backend_store, tmp_path):
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    h.run_until_done(run_id)
    events = backend_store.events(run_id)
    s1 = [(e["old_state"], e["new_state"]) for e in events if e["step"] == "s1" and e["action"] == "step_state"]
    assert s1 == [("pending", "queued"), ("queued", "running"), ("running", "success")]
    run_states = [e["new_state"] for e in events if e["action"] in ("run_created", "run_state")]
    assert run_states == ["queued", "running", "success"]
    assert {e["actor"] for e in events} >= {"test", "scheduler@test", "worker@test"}


def test_a_finished_step_moves_its_run_on_without_the_scheduler(backend_store, tmp_path):
    # Given a running chain whose worker's completion event is lost
    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "a")})
    item = h.dispatcher.sent.pop(0)
    run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    h.events.purge()
    # Then the finish transaction already queued the next step (fast-follow) and published it
    assert states(backend_store, run_id)["s1"] == "success"
    assert states(backend_store, run_id)["s2"] == "queued"
    assert [d.step.name for d in h.dispatcher.sent] == ["s2"]
    assert backend_store.runs_needing_attention() == []


def test_sweep_reconciles_a_run_without_counters(backend_store, tmp_path):
    # Given a running run whose readiness counters are missing (created before they existed)
    from sqlalchemy import update

    from flowkit.store import tables as t

    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "b")})
    item = h.dispatcher.sent.pop(0)
    h.runtime.dispatcher = None  # no fast-follow: the step ends, nothing else moves
    run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    h.dispatcher.sent.clear()
    with backend_store.engine.begin() as conn:
        conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(steps_left=None))
        conn.execute(
            update(t.step_runs)
            .where(t.step_runs.c.run_id == run_id, t.step_runs.c.state != "success")
            .values(state="pending", ok_up=0)
        )
    # Then only that run needs attention, and a sweep recounts it and moves it on
    assert backend_store.runs_needing_attention() == [run_id]
    h.scheduler.sweep()
    assert states(backend_store, run_id)["s2"] == "queued"
    assert backend_store.runs_needing_attention() == []


def test_a_redelivery_while_the_holder_looks_alive_is_dropped_and_the_scheduler_recovers_it(backend_store, tmp_path):
    # Given worker A claimed s1 and died just now (its heartbeat is still fresh)
    h = inline_harness(backend_store, ENGINE_DAGS)
    log = tmp_path / "log"
    run_id = h.trigger("chain", {"log": str(log)})
    h.dispatcher.sent.clear()
    backend_store.claim_attempt(run_id, "s1", 1, worker="A", lost_after=30, max_deliveries=3)
    # When the broker redelivers to this worker, it is acknowledged as a duplicate at once
    # (no worker process is held waiting), and the step does not run here
    assert run_attempt(h.runtime, run_id, "s1", 1) == "duplicate"
    assert not log.exists()
    # Then once A's heartbeat is stale, the scheduler publishes the attempt again ...
    with backend_store.tx("test") as tx:
        tx.conn.execute(
            update(t.attempts).values(
                heartbeat_at=tx.now - timedelta(seconds=60), dispatched_at=tx.now - timedelta(seconds=60)
            )
        )
    h.scheduler.sweep()
    assert [d.step.name for d in h.dispatcher.sent] == ["s1"]
    # ... and the next delivery takes it over
    assert h.run_until_done(run_id) == "success"
    (a,) = backend_store.attempts(run_id, "s1")
    assert a["deliveries"] == 2 and a["worker"] == "worker@test"
    assert log.read_text().split()[0] == "s1"


def test_a_transition_outside_the_tables_is_refused(backend_store, tmp_path):
    from flowkit.states import StepState

    h = inline_harness(backend_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    with pytest.raises(ValueError, match="pending -> success is not an allowed transition"):
        with backend_store.tx("test") as tx:
            tx.cas_step(run_id, "s2", [StepState.PENDING], StepState.SUCCESS)
    assert states(backend_store, run_id)["s2"] == "pending"
