"""Compensation (saga) and approval steps, in-process on SQLite and PostgreSQL (InlineHarness
over backend_store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit import Flow
from flowkit.errors import ApprovalError, DefinitionError, NotFoundError
from flowkit.store import approvals
from flowkit.testing import FakeClock

from ..store_backends import inline_harness, sync_cached
from . import saga_retry_cases

ROOT = Path(__file__).resolve().parents[2]
SAGA_DAGS = str(ROOT / "tests" / "dags" / "saga")


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def attempts_of(store, run_id, step):  # type: ignore[no-untyped-def]
    return store.attempts(run_id, step)


def span(store, run_id, step):  # type: ignore[no-untyped-def]
    """(start of the first attempt, end of the last) of a step."""
    atts = store.attempts(run_id, step)
    return atts[0]["started_at"], atts[-1]["ended_at"]


# -- compensation ---------------------------------------------------------------------------


def test_failed_run_compensates_succeeded_steps_in_reverse_order(backend_store):
    # Given reserve -> charge -> ship (fails), reserve -> notify, charge -> audit
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_fail")
    # When the run is worked to the end
    assert h.run_until_done(run_id) == "failed"
    st = states(backend_store, run_id)
    # Then the succeeded steps with compensate= were undone, the failed one was not
    assert st["ship"] == "failed"
    assert {st[n] for n in ("reserve:compensate", "charge:compensate", "notify:compensate")} == {"success"}
    assert "ship:compensate" not in st and "audit:compensate" not in st
    # ... each after the compensations of the succeeded steps downstream of it
    reserve_start, _ = span(backend_store, run_id, "reserve:compensate")
    for later in ("charge:compensate", "notify:compensate"):
        assert span(backend_store, run_id, later)[1] <= reserve_start
    # ... each got the original step's result
    results = backend_store.results(run_id)
    assert results["charge:compensate"] == {"undid": "charge", "result": {"made": "charge"}}
    # ... and the run records the outcome, in its column and its audit reason
    run = backend_store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    ended = [e for e in backend_store.events(run_id) if e["action"] == "run_state" and e["new_state"] == "failed"]
    assert ended and "failed steps: ship; compensated: " in ended[-1]["reason"]
    started = [e for e in backend_store.events(run_id) if e["action"] == "compensation_started"]
    assert len(started) == 1 and "charge:compensate" in started[0]["reason"]
    assert backend_store.ledger_balance() == {k: (0, 0) for k in backend_store.ledger_balance()}


def test_failing_compensation_is_visible_and_the_others_still_run(backend_store):
    # Given first -> second (its compensation always fails) -> third (fails)
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_comp_fails")
    assert h.run_until_done(run_id) == "failed"
    st = states(backend_store, run_id)
    # Then second's compensation failed, and first's still ran after it
    assert st["second:compensate"] == "failed"
    assert st["first:compensate"] == "success"
    assert span(backend_store, run_id, "second:compensate")[1] <= span(backend_store, run_id, "first:compensate")[0]
    assert "cannot release the hold" in attempts_of(backend_store, run_id, "second:compensate")[-1]["error"]
    run = backend_store.get_run(run_id)
    assert run["outcome"] == "compensation failed"
    reason = [e for e in backend_store.events(run_id) if e["action"] == "run_state"][-1]["reason"]
    assert "compensation failed: second:compensate" in reason and "first:compensate" in reason


def test_successful_run_runs_no_compensation(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_ok")
    assert h.run_until_done(run_id) == "success"
    assert not [s for s in states(backend_store, run_id) if s.endswith(":compensate")]
    assert backend_store.get_run(run_id)["outcome"] is None


def test_compensation_retries_like_its_step(backend_store):
    # Given a step with retries=1 whose compensation fails on its first attempt
    clock = FakeClock()
    h = inline_harness(backend_store, SAGA_DAGS, clock=clock)
    run_id = h.trigger("saga_comp_retries")
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    # Then the compensation was retried and succeeded
    atts = attempts_of(backend_store, run_id, "refundable:compensate")
    assert [a["state"] for a in atts] == ["failed", "success"]
    assert backend_store.get_run(run_id)["outcome"] == "compensated"


def test_failed_run_with_nothing_to_undo_has_no_outcome(backend_store):
    # Given a run whose only compensated step is the one that fails
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_nothing")
    assert h.run_until_done(run_id) == "failed"
    # Then nothing is compensated (a step that did not succeed has nothing to undo)
    assert set(states(backend_store, run_id)) == {"only"}
    assert backend_store.get_run(run_id)["outcome"] is None


def test_builder_checks_compensate():
    def fn(ctx):  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(DefinitionError, match="compensate=42 is not callable"):
        Flow("f").step("a", fn, compensate=42)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="at most 89 characters"):
        Flow("f").step("a" * 95, fn, compensate=fn)
    with pytest.raises(DefinitionError, match="takes 2 required arguments"):
        Flow("f").step("a", fn, compensate=lambda x, y: None)
    # A user step can never take a compensation step's name: ':' is not allowed in names
    with pytest.raises(DefinitionError, match="is not valid"):
        Flow("f").step("a:compensate", fn)
    # compensate= is a step option, not a flow default
    with pytest.raises(DefinitionError, match="compensate= is a step option"):
        Flow("f", compensate=fn)  # type: ignore[call-arg]


def test_compensation_waits_for_every_compensated_descendant():
    def fn(ctx):  # type: ignore[no-untyped-def]
        return 1

    spec = (
        Flow("f")
        .step("a", fn, compensate=fn)
        .then("b", fn)
        .then("c", fn, compensate=fn)
        .step("d", fn, after="a", compensate=fn)
        .spec()
    )
    comps = {c.name: c for c in spec.compensations}
    assert set(comps["a:compensate"].upstream) == {"c:compensate", "d:compensate"}
    assert comps["c:compensate"].upstream == () and comps["c:compensate"].trigger == "all_done"
    assert spec.step("a").compensate == "a:compensate" and spec.step_names == ["a", "b", "c", "d"]


# -- approvals ------------------------------------------------------------------------------


def _waiting(h, flow):  # type: ignore[no-untyped-def]
    run_id = h.trigger(flow)
    h.work()
    assert states(h.store, run_id)["sign_off"] == "awaiting_approval"
    assert h.dispatcher.sent == []  # it holds no worker and no attempt while it waits
    return run_id


def test_approval_approved_lets_downstream_run(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = _waiting(h, "approve_me")
    # When someone approves it
    approvals.decide(backend_store, run_id, "sign_off", approve=True, by="alice", reason="looks right")
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    h.scheduler.grant()
    # Then the downstream step runs and the run succeeds
    assert h.run_until_done(run_id) == "success"
    assert backend_store.results(run_id)["sign_off"]["by"] == "alice"
    att = attempts_of(backend_store, run_id, "sign_off")
    assert [(a["state"], a["worker"]) for a in att] == [("success", "alice")]
    decided = [e for e in backend_store.events(run_id) if e["action"] == "approved"]
    assert [(e["actor"], e["reason"]) for e in decided] == [("alice", "approved by alice: looks right")]


def test_approval_rejected_fails_downstream_and_compensates(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = _waiting(h, "approve_me")
    approvals.decide(backend_store, run_id, "sign_off", approve=False, by="bob", reason="wrong totals")
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    assert h.run_until_done(run_id) == "failed"
    st = states(backend_store, run_id)
    assert (st["sign_off"], st["publish"], st["prepare:compensate"]) == ("failed", "upstream_failed", "success")
    assert backend_store.get_run(run_id)["outcome"] == "compensated"
    assert attempts_of(backend_store, run_id, "sign_off")[0]["error"] == "rejected by bob: wrong totals"


def test_approval_timeout_rejects_by_default(backend_store):
    clock = FakeClock()
    h = inline_harness(backend_store, SAGA_DAGS, clock=clock)
    run_id = _waiting(h, "approve_times_out")
    # When 10 s pass with no decision (the harness jumps the fake clock to the deadline)
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    assert states(backend_store, run_id)["sign_off"] == "failed"
    decided = [e for e in backend_store.events(run_id) if e["action"] == "rejected"]
    assert decided[0]["actor"] == "timeout" and "no decision within 10 s" in decided[0]["reason"]


def test_approval_timeout_can_approve(backend_store):
    clock = FakeClock()
    h = inline_harness(backend_store, SAGA_DAGS, clock=clock)
    run_id = _waiting(h, "approve_times_out_yes")
    assert h.run_until_done(run_id, advance=clock.advance) == "success"
    assert backend_store.results(run_id)["sign_off"]["by"] == "timeout"


def test_deciding_twice_or_a_step_not_waiting_says_what_state_it_is_in(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = _waiting(h, "approve_me")
    approvals.decide(backend_store, run_id, "sign_off", approve=True, by="alice")
    with pytest.raises(
        ApprovalError,
        match=r'step "sign_off" of run .* is success \(approved by alice\), '
        r"not awaiting approval",
    ):
        approvals.decide(backend_store, run_id, "sign_off", approve=False, by="bob")
    with pytest.raises(ApprovalError, match='step "prepare" .* is a task step, not an approval'):
        approvals.decide(backend_store, run_id, "prepare", approve=True, by="bob")
    with pytest.raises(NotFoundError, match='has no step "sign_of"; its approval steps are: sign_off'):
        approvals.decide(backend_store, run_id, "sign_of", approve=True, by="bob")
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        approvals.decide(backend_store, "nope", "sign_off", approve=True, by="bob")
    # A pending approval (its upstream still running) is not awaiting a decision either
    other = h.trigger("approve_me")
    with pytest.raises(ApprovalError, match="is pending, not awaiting approval"):
        approvals.decide(backend_store, other, "sign_off", approve=True, by="bob")


def test_builder_checks_approval_options():
    with pytest.raises(DefinitionError, match="on_timeout='maybe' must be one of"):
        Flow("f").approval("ok", on_timeout="maybe")
    with pytest.raises(DefinitionError, match="timeout='soon' is not a duration"):
        Flow("f").approval("ok", timeout="soon")
    with pytest.raises(DefinitionError, match="unknown option 'retries'"):
        Flow("f").approval("ok", retries=2)  # type: ignore[call-arg]
    spec = Flow("f").approval("ok", timeout="2h", on_timeout="approve").spec()
    step = spec.step("ok")
    assert (step.kind, step.fn, step.approval_timeout_seconds, step.on_timeout) == (
        "approval",
        "approval",
        7200.0,
        "approve",
    )


# -- stored before this feature ---------------------------------------------------------------


def test_a_run_stored_before_migration_0003_still_runs_and_compensates(backend_store):
    from alembic import command

    # Given a queued run in a store taken back to schema 0002 (the columns added since dropped)
    store = backend_store
    sync_cached(store, SAGA_DAGS)
    run_id = store.create_run(store.flow_spec("saga_fail"), {}, actor="old")
    store.dispose()
    with store.engine.connect() as conn:
        command.downgrade(store._alembic_config(conn), "0002")
        conn.commit()
    store.dispose()
    # When the store is migrated and the run is worked
    store.upgrade()
    h = inline_harness(store, SAGA_DAGS)
    h.scheduler.start_run(run_id)
    # Then it runs as a new one would
    assert h.run_until_done(run_id) == "failed"
    assert store.get_run(run_id)["outcome"] == "compensated"


def test_a_spec_stored_before_compensations_and_approvals_loads():
    import json

    from flowkit.spec import FlowSpec

    def fn(ctx):  # type: ignore[no-untyped-def]
        return 1

    data = json.loads(Flow("f").step("a", fn).then("b", fn).spec().to_json())
    data.pop("compensations")
    for step in data["steps"]:
        for key in ("compensates", "compensate", "approval_timeout_seconds", "on_timeout"):
            step.pop(key)
    spec = FlowSpec.from_dict(data)
    assert spec.compensations == () and spec.step("a").compensate is None
    assert spec.kinds == {"task"}


def test_a_compensation_holds_its_steps_pool_and_lock_and_gives_them_back(backend_store):
    backend_store.set_pool("rooms", 1)
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_pool")
    assert h.run_until_done(run_id) == "failed"
    (att,) = attempts_of(backend_store, run_id, "booked:compensate")
    assert att["state"] == "success" and "pool:rooms" in att["holds"] and "lock:calendar" in att["holds"]
    assert all(pair == (0, 0) for pair in backend_store.ledger_balance().values())


# -- retrying a compensated run (cases shared with tests/integration/test_saga_approvals.py) -
@pytest.mark.parametrize("case", saga_retry_cases.CASES, ids=lambda c: c.__name__)
def test_retry_of_a_compensated_run(backend_store, tmp_path, case):  # type: ignore[no-untyped-def]
    case(backend_store, tmp_path)


def test_a_compensation_runs_its_function_not_the_shell_command_or_check_of_its_step(backend_store):
    # Given a shell step and a step with success_when=, each with compensate=, then a failure
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_shell")
    assert h.run_until_done(run_id) == "failed"
    # Then each compensation ran its own function (not the command, not the step's check)
    results = backend_store.results(run_id)
    assert results["touch:compensate"]["undid"] == "touch"
    assert results["checked:compensate"] == {"undid": "checked", "result": {"made": "checked"}}
    assert backend_store.get_run(run_id)["outcome"] == "compensated"
