"""Operators' actions (pause, unpause, cancel, retry, mark) over the inline harness, on SQLite
and PostgreSQL (``backend_store``).

Flows: tests/dags/operator/flows.py. Each action goes through the store's operator ops and
``InlineHarness.act`` (revoke, wake the scheduler), as the CLI does.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from flowkit.config import Settings
from flowkit.errors import ActionRefused, NotFoundError
from flowkit.execution.attempt import run_attempt
from flowkit.states import RunState, StepState, can_transition

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "operator")


@pytest.fixture
def h(backend_store):  # type: ignore[no-untyped-def]
    backend_store.set_pool("one", 1)
    return inline_harness(backend_store, DAGS, settings=replace(Settings(database_url=backend_store.url)))


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def run_state(store, run_id) -> str:  # type: ignore[no-untyped-def]
    return str(store.get_run(run_id)["state"])


def assert_balanced(store) -> None:  # type: ignore[no-untyped-def]
    for key, (used, held) in store.ledger_balance().items():
        assert used == held, f"ledger {key}: used {used}, held by live attempts {held}"


def operator_events(store, run_id):  # type: ignore[no-untyped-def]
    return [e for e in store.events(run_id) if e["action"].startswith("operator_")]


# -- pause / unpause ---------------------------------------------------------------------------
def test_a_paused_flow_starts_no_run_until_unpaused(h):
    store = h.store
    result = h.act(store.pause_flow("single", by="ann", reason="maintenance"))
    assert result.summary.startswith('flow "single": paused')
    first, second = h.trigger("single"), h.trigger("single")
    h.scheduler.step_once(max_wait=0)
    assert [run_state(store, r) for r in (first, second)] == ["queued", "queued"]
    assert not h.dispatcher.sent
    # When unpaused, the queued runs start, one at a time (max_active_runs=1)
    h.act(store.unpause_flow("single", by="bob", reason="done"))
    assert [run_state(store, r) for r in (first, second)] == ["running", "queued"]
    assert h.run_until_done(first) == "success"
    assert h.run_until_done(second) == "success"
    # And both actions are in the flow's audit trail, with who and why
    actions = [(e["action"], e["actor"], e["reason"]) for e in store.flow_events("single")]
    assert actions == [
        ("operator_pause", "ann", "paused by ann: maintenance"),
        ("operator_unpause", "bob", "unpaused by bob: done"),
    ]


def test_a_running_run_finishes_while_its_flow_is_paused(h):
    run_id = h.trigger("gated", {"flag": ""})
    h.act(h.store.pause_flow("gated", by="ann"))
    assert h.run_until_done(run_id) == "failed"  # it went on to its end (the gate failed)


def test_pausing_twice_or_unpausing_an_active_flow_is_refused(h):
    h.store.pause_flow("single", by="ann")
    with pytest.raises(ActionRefused, match='flow "single" is already paused; `flowkit flows unpause single`'):
        h.store.pause_flow("single", by="ann")
    h.store.unpause_flow("single", by="ann")
    with pytest.raises(ActionRefused, match='flow "single" is not paused'):
        h.store.unpause_flow("single", by="ann")
    with pytest.raises(NotFoundError, match='no flow named "singel". Did you mean "single"'):
        h.store.pause_flow("singel", by="ann")


def test_schedule_ticks_are_not_created_for_a_paused_flow(h):
    from sqlalchemy import update

    from flowkit.store import tables as t

    with h.store.tx("test") as tx:  # give the flow a schedule whose tick is due
        tx.conn.execute(update(t.flows).where(t.flows.c.name == "broken").values(schedule="* * * * *"))
    h.store.pause_flow("broken", by="ann")
    h.scheduler.schedule_cron(h.clock().replace(year=2100))
    assert h.store.list_runs("broken") == []


# -- cancel -----------------------------------------------------------------------------------
def test_cancel_gives_back_the_slot_and_the_next_run_gets_it(h):
    store = h.store
    first = h.trigger("held")
    second = h.trigger("held")
    # the first run holds pool "one"'s only slot; the second waits for it
    assert states(store, first)["hold"] == "queued"
    assert states(store, second)["hold"] == "scheduled"
    assert store.ledger_balance()["pool:one"] == (1, 1)
    result = h.act(store.cancel_run(first, by="ann", reason="wrong input"))
    assert result.summary == (
        f"run {first}: cancelled (1 step(s) cancelled, 1 attempt(s) stopped, 1 pool slot(s) given back)"
    )
    # Then the queued attempt was revoked, the slot went to the waiter at once
    assert len(h.dispatcher.revoked) == 1
    assert run_state(store, first) == "cancelled" and states(store, first) == {"hold": "cancelled"}
    assert store.attempts(first)[0]["state"] == "cancelled"
    assert states(store, second)["hold"] == "queued"
    assert [d.run_id for d in h.dispatcher.sent] == [second]
    assert store.ledger_balance()["pool:one"] == (1, 1)
    assert h.run_until_done(second) == "success"
    assert store.ledger_balance()["pool:one"] == (0, 0)
    assert_balanced(store)
    # And the audit trail names who cancelled, and why
    assert [(e["actor"], e["reason"]) for e in operator_events(store, first)] == [
        ("ann", "cancelled by ann: wrong input (1 step(s) cancelled, 1 attempt(s) stopped, 1 pool slot(s) given back)")
    ]


def test_cancel_a_queued_run_and_refuse_a_finished_one(h):
    h.store.pause_flow("single", by="ann")
    run_id = h.trigger("single")
    h.act(h.store.cancel_run(run_id, by="ann"))
    assert run_state(h.store, run_id) == "cancelled"
    assert states(h.store, run_id) == {"hold": "cancelled"}
    with pytest.raises(ActionRefused, match=f"run {run_id} is already cancelled; nothing to cancel"):
        h.store.cancel_run(run_id, by="ann")
    done = h.trigger("broken")
    h.run_until_done(done)
    with pytest.raises(ActionRefused, match="is already failed; nothing to cancel .`flowkit runs retry"):
        h.store.cancel_run(done, by="ann")


def test_a_worker_finishing_after_the_cancel_does_not_revive_the_step(h, caplog):
    caplog.set_level(logging.WARNING, logger="flowkit")
    run_id = h.trigger("inside", {"store": h.store.url})
    h.work()
    # the step cancelled its own run while it ran, then returned: its outcome is discarded
    assert run_state(h.store, run_id) == "cancelled"
    assert states(h.store, run_id) == {"first": "success", "cancel_me": "cancelled", "never": "cancelled"}
    assert [a["state"] for a in h.store.attempts(run_id, "cancel_me")] == ["cancelled"]
    assert "after an operator cancelled it; outcome discarded" in caplog.text
    assert "cancel_me" not in h.store.results(run_id)
    assert_balanced(h.store)


def test_an_interrupted_attempt_of_a_cancelled_run_is_not_put_back(h, caplog):
    caplog.set_level(logging.WARNING, logger="flowkit")
    run_id = h.trigger("inside", {"store": h.store.url, "interrupt": True})
    run_attempt(h.runtime, *_next(h))  # first
    with pytest.raises(SystemExit):
        run_attempt(h.runtime, *_next(h))  # cancel_me: cancels its run, then is interrupted
    assert [a["state"] for a in h.store.attempts(run_id, "cancel_me")] == ["cancelled"]
    assert states(h.store, run_id)["cancel_me"] == "cancelled"
    assert "stopped after an operator cancelled it; not run again" in caplog.text
    assert not [e for e in h.store.events(run_id) if e["action"] == "attempt_interrupted"]


def _next(h):  # type: ignore[no-untyped-def]
    item = h.dispatcher.sent.pop(0)
    return item.run_id, item.step.name, item.attempt


# -- retry ------------------------------------------------------------------------------------
def test_retry_from_the_failed_steps_after_fixing_the_cause(h, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("stop")
    store = h.store
    run_id = h.trigger("gated", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "failed"
    assert states(store, run_id) == {
        "extract": "success",
        "gate": "failed",
        "load": "upstream_failed",
        "publish": "upstream_failed",
        "report": "success",
    }
    extract_result = store.results(run_id)["extract"]
    flag.write_text("go")
    result = h.act(store.retry_run(run_id, by="ann", reason="flag fixed"))
    # report (all_done) succeeded: it is not retried (name it with --step to run it again)
    assert result.summary == f"run {run_id}: running again; 3 step(s) back to pending: gate, load, publish"
    # the gate is ready at once
    assert [d.step.name for d in h.dispatcher.sent] == ["gate"]
    assert h.dispatcher.sent[0].attempt == 2  # attempt numbers go on: task ids never collide
    assert h.run_until_done(run_id) == "success"
    assert set(states(store, run_id).values()) == {"success"}
    # the steps not retried kept their result and ran once
    assert store.results(run_id)["extract"] == extract_result
    assert [a["number"] for a in store.attempts(run_id, "extract")] == [1]
    assert [a["number"] for a in store.attempts(run_id, "report")] == [1]
    assert len({a["task_id"] for a in store.attempts(run_id)}) == len(store.attempts(run_id))
    assert store.get_run(run_id)["steps_left"] == 0
    assert [e["reason"] for e in operator_events(store, run_id)] == [
        "retried by ann: flag fixed (steps: gate, load, publish)"
    ]


def test_retry_named_steps_and_their_downstream_even_if_they_succeeded(h, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("go")
    run_id = h.trigger("gated", {"flag": str(flag)})
    assert h.run_until_done(run_id) == "success"
    h.act(h.store.retry_run(run_id, steps=["load"], downstream=True, by="ann"))
    assert states(h.store, run_id) == {
        "extract": "success",
        "gate": "success",
        "load": "queued",
        "publish": "pending",
        "report": "pending",
    }
    assert h.run_until_done(run_id) == "success"
    runs_of = {s: len(h.store.attempts(run_id, s)) for s in ("extract", "gate", "load", "publish", "report")}
    assert runs_of == {"extract": 1, "gate": 1, "load": 2, "publish": 2, "report": 2}
    # without --downstream only the step named runs again
    h.act(h.store.retry_run(run_id, steps=["extract"], by="ann"))
    assert h.run_until_done(run_id) == "success"
    assert len(h.store.attempts(run_id, "extract")) == 2
    assert len(h.store.attempts(run_id, "gate")) == 1


def test_a_retried_step_gets_its_retry_budget_again(h, tmp_path, monkeypatch):
    from flowkit.testing import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(h.scheduler, "clock", clock)
    flag = tmp_path / "flag"
    run_id = h.trigger("flaky", {"flag": str(flag)})
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    assert len(h.store.attempts(run_id, "gate")) == 3
    h.act(h.store.retry_run(run_id, by="ann"))
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    # three more attempts, numbered 4 to 6, before it failed again
    assert [a["number"] for a in h.store.attempts(run_id, "gate")] == [1, 2, 3, 4, 5, 6]
    reasons = [
        e["reason"]
        for e in h.store.events(run_id)
        if e["step"] == "gate" and e["new_state"] == "failed" and e["action"] == "step_state"
    ]
    assert reasons[-1].startswith("attempt 6 (try 3 since the operator's retry) of 3 failed")


def test_retry_refusals(h):
    store = h.store
    store.pause_flow("single", by="ann")
    queued = h.trigger("single")
    with pytest.raises(ActionRefused, match=f"run {queued} is queued; retry it once it has ended, or cancel it first"):
        store.retry_run(queued, by="ann")
    store.unpause_flow("single", by="ann")
    h.act(store.cancel_run(queued, by="ann"))
    ok = h.trigger("held")
    assert h.run_until_done(ok) == "success"
    with pytest.raises(
        ActionRefused,
        match="is success and has no failed, upstream_failed or cancelled "
        "step; name the steps to run again with --step",
    ):
        store.retry_run(ok, by="ann")
    with pytest.raises(NotFoundError, match='flow "held" has no step "hodl". Did you mean "hold"'):
        store.retry_run(ok, steps=["hodl"], by="ann")
    # reopening a run counts against max_active_runs
    running = h.trigger("single", {"seconds": 0.0})
    with pytest.raises(ActionRefused, match=r'flow "single" already has 1 running run\(s\) \(max_active_runs=1\)'):
        store.retry_run(queued, by="ann")
    assert h.run_until_done(running) == "success"
    h.act(store.retry_run(queued, by="ann"))  # the cancelled run, now that there is room
    assert h.run_until_done(queued) == "success"


# -- mark -------------------------------------------------------------------------------------
def test_mark_a_failed_step_success_unblocks_its_downstream(h):
    store = h.store
    run_id = h.trigger("broken")
    assert h.run_until_done(run_id) == "failed"
    assert states(store, run_id)["after_bad"] == "upstream_failed"
    result = h.act(store.mark_step(run_id, "bad", "success", by="ann", reason="fixed by hand"))
    assert result.summary == (f"run {run_id} step bad: failed -> success; run running (reopened), 1 step(s) left")
    assert [d.step.name for d in h.dispatcher.sent] == ["after_bad"]
    assert h.run_until_done(run_id) == "success"
    assert states(store, run_id) == {"first": "success", "bad": "success", "after_bad": "success", "beside": "success"}
    assert [(e["actor"], e["step"], e["old_state"], e["new_state"]) for e in operator_events(store, run_id)] == [
        ("ann", "bad", "failed", "success")
    ]


def test_mark_skipped_in_a_running_run_and_the_run_ends_by_the_usual_rule(h):
    store = h.store
    run_id = h.trigger("broken")
    # first ran; bad and beside are queued: mark the pending after_bad skipped
    h.act(store.mark_step(run_id, "after_bad", "skipped", by="ann"))
    assert h.run_until_done(run_id) == "failed"  # bad still failed: the run fails
    st = states(store, run_id)
    assert st["after_bad"] == "skipped" and st["bad"] == "failed"
    # marking the failed step skipped ends the run again, now successfully; the operator's
    # earlier skip stays
    result = h.act(store.mark_step(run_id, "bad", "skipped", by="ann"))
    assert result.summary.endswith("the run ended success")
    assert states(store, run_id)["after_bad"] == "skipped"
    assert run_state(store, run_id) == "success"


def test_mark_refusals(h):
    store = h.store
    run_id = h.trigger("broken")
    # first is queued
    with pytest.raises(
        ActionRefused, match=f"run {run_id} step first is queued .attempt 1.; wait for it to end, or cancel the run"
    ):
        store.mark_step(run_id, "first", "success", by="ann")
    h.run_until_done(run_id)
    with pytest.raises(ActionRefused, match=f"run {run_id} step first is already success"):
        store.mark_step(run_id, "first", "success", by="ann")
    with pytest.raises(ActionRefused, match="a step can be marked success or skipped, not failed"):
        store.mark_step(run_id, "first", "failed", by="ann")
    with pytest.raises(NotFoundError, match='flow "broken" has no step "bda". Did you mean "bad"'):
        store.mark_step(run_id, "bda", "success", by="ann")
    h.act(store.retry_run(run_id, by="ann"))
    h.act(store.cancel_run(run_id, by="ann"))
    with pytest.raises(ActionRefused, match=f"run {run_id} is cancelled; `flowkit runs retry {run_id}`"):
        store.mark_step(run_id, "bad", "success", by="ann")
    store.pause_flow("broken", by="ann")
    queued = h.trigger("broken")
    with pytest.raises(ActionRefused, match=f"run {queued} is queued and has not started"):
        store.mark_step(queued, "bad", "success", by="ann")


def test_operator_transitions_are_apart_from_the_engine_s():
    assert not can_transition(StepState.FAILED, StepState.PENDING)
    assert can_transition(StepState.FAILED, StepState.PENDING, operator=True)
    assert not can_transition(RunState.FAILED, RunState.RUNNING)
    assert can_transition(RunState.FAILED, RunState.RUNNING, operator=True)
    assert not can_transition(StepState.RUNNING, StepState.SUCCESS, operator=True) or can_transition(
        StepState.RUNNING, StepState.SUCCESS
    )  # the engine's own move, unchanged
    assert not can_transition(StepState.QUEUED, StepState.SUCCESS, operator=True)


def test_an_action_runs_again_after_a_deadlock_with_a_worker(h, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from flowkit.store.operator_ops import OperatorOps

    class Deadlock(Exception):
        sqlstate = "40P01"

    real = OperatorOps._cancel_steps
    calls = []

    def once_deadlocked(self, tx, run_id, why):  # type: ignore[no-untyped-def]
        calls.append(run_id)
        if len(calls) == 1:
            raise OperationalError("UPDATE step_runs", {}, Deadlock("deadlock detected"))
        return real(self, tx, run_id, why)

    monkeypatch.setattr(OperatorOps, "_cancel_steps", once_deadlocked)
    run_id = h.trigger("held")
    h.act(h.store.cancel_run(run_id, by="ann"))
    assert len(calls) == 2 and run_state(h.store, run_id) == "cancelled"
    assert len(operator_events(h.store, run_id)) == 1  # the first try wrote nothing
    assert_balanced(h.store)


def test_a_run_stored_before_migration_0006_can_be_retried_and_marked(h):
    from alembic import command

    store = h.store
    run_id = h.trigger("broken")
    assert h.run_until_done(run_id) == "failed"
    # Back to the schema before this migration (no retry_base, no events.flow_name), and up
    with store.engine.connect() as conn:
        command.downgrade(store._alembic_config(conn), "0002")
        conn.commit()
    store.dispose()
    assert store.schema_revision() == "0002"
    store.upgrade()
    assert store.schema_revision() == store.head_revision()
    h.act(store.retry_run(run_id, by="ann"))
    assert h.run_until_done(run_id) == "failed"
    assert [a["number"] for a in store.attempts(run_id, "bad")] == [1, 2]
    h.act(store.mark_step(run_id, "bad", "success", by="ann"))
    assert h.run_until_done(run_id) == "success"


# -- mark: the marked step's result, and what its downstream steps see -------------------------
def test_a_step_marked_success_gives_its_downstream_a_null_result(h):
    # Given bad failed, so uses (which reads ctx.upstream["bad"]) did not run
    store = h.store
    run_id = h.trigger("handoff")
    assert h.run_until_done(run_id) == "failed"
    # When bad is marked success without a result
    h.act(store.mark_step(run_id, "bad", "success", by="ann", reason="done by hand"))
    # Then uses runs, and gets None for bad (no KeyError)
    assert h.run_until_done(run_id) == "success"
    results = store.results(run_id)
    assert results["bad"] is None
    assert results["uses"] == {"bad": None}
    # ... and the audit trail says a result was given (null)
    marked = [e for e in operator_events(store, run_id) if e["action"] == "operator_mark"]
    assert marked[-1]["reason"] == "marked success by ann: done by hand; result: null"


def test_a_step_marked_success_with_a_result_hands_it_downstream(h):
    store = h.store
    run_id = h.trigger("handoff")
    assert h.run_until_done(run_id) == "failed"
    h.act(store.mark_step(run_id, "bad", "success", by="ann", result='{"rows": 3}'))
    assert h.run_until_done(run_id) == "success"
    assert store.results(run_id)["uses"] == {"bad": {"rows": 3}}
    marked = [e for e in operator_events(store, run_id) if e["action"] == "operator_mark"]
    assert marked[-1]["reason"] == 'marked success by ann; result: {"rows": 3}'


def test_every_upstream_that_did_not_skip_is_in_ctx_upstream(h):
    # Given after_all (all_done) after first (succeeded) and bad (failed: no result)
    store = h.store
    run_id = h.trigger("handoff")
    assert h.run_until_done(run_id) == "failed"
    # Then after_all saw both, bad as None
    assert store.results(run_id)["after_all"] == {"bad": None, "first": {"step": "first"}}


def test_mark_result_refusals(h):
    store = h.store
    run_id = h.trigger("handoff")
    assert h.run_until_done(run_id) == "failed"
    with pytest.raises(
        ActionRefused,
        match=r"--result is not JSON \(Expecting property name enclosed in "
        r"double quotes: line 1 column 2 \(char 1\)\); pass a JSON value, "
        r"e.g. --result .\{\"rows\": 3\}. or --result null",
    ):
        store.mark_step(run_id, "bad", "success", by="ann", result="{rows: 3}")
    with pytest.raises(
        ActionRefused,
        match=r"--result is 17 bytes, over the 10-byte cap "
        r"\(FLOWKIT_MAX_RESULT_BYTES\)",
    ):
        store.mark_step(run_id, "bad", "success", by="ann", result='{"rows": 3000000}', max_result_bytes=10)
    with pytest.raises(ActionRefused, match="a step marked skipped has no result; drop --result"):
        store.mark_step(run_id, "bad", "skipped", by="ann", result="1")
    # nothing was changed by the refusals
    assert states(store, run_id)["bad"] == "failed"
    assert not operator_events(store, run_id)
