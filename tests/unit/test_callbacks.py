"""on_success / on_failure / on_retry at flow and step level, run in-process (InlineHarness)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowkit import DefinitionError, Flow
from flowkit.spec import FlowSpec
from flowkit.store.sql import SqlStore
from flowkit.testing import FakeClock, InlineHarness

from .where import assert_where

DAGS = Path(__file__).resolve().parent.parent / "dags" / "callbacks"
HERE = Path(__file__)


@pytest.fixture
def harness(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    clock = FakeClock()
    h = InlineHarness(store, str(DAGS), clock=clock)
    h.fake_clock = clock  # type: ignore[attr-defined]
    yield h
    store.dispose()


def _run(h: InlineHarness, flow: str, out: Path) -> tuple[str, str, list[dict]]:
    run_id = h.trigger(flow, {"out": str(out)})
    state = h.run_until_done(run_id, advance=h.fake_clock.advance)  # type: ignore[attr-defined]
    h.work()  # callbacks published by the run's last transaction
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return run_id, state, lines


def _seen(lines: list[dict]) -> list[tuple]:
    return [(e["kind"], e["step"], e["state"], e["attempt"]) for e in lines]


def test_step_success_retry_and_flow_success_callbacks_run_with_their_context(harness, tmp_path):
    run_id, state, lines = _run(harness, "cb_ok", tmp_path / "out.jsonl")
    assert state == "success"
    assert _seen(lines) == [
        ("on_success", "a", "success", 1),
        ("on_retry", "b", "up_for_retry", 1),
        ("on_success", "b", "success", 2),
        ("on_success", None, "success", None),
    ]
    assert {e["run_id"] for e in lines} == {run_id} and {e["flow"] for e in lines} == {"cb_ok"}
    assert "the first attempt fails" in lines[1]["error"]
    ran = [e for e in harness.store.events(run_id) if e["action"] == "callback_ran"]
    assert len(ran) == 4


def test_step_failure_flow_retry_and_flow_failure_callbacks(harness, tmp_path):
    run_id, state, lines = _run(harness, "cb_fail", tmp_path / "out.jsonl")
    assert state == "failed"
    seen = _seen(lines)
    # a's first attempt: the step's and the flow's on_retry; its last: the step's on_failure;
    # c became upstream_failed (it never failed itself: no callback); the run: on_failure.
    assert sorted(seen[:2], key=str) == sorted([("on_retry", "a", "up_for_retry", 1)] * 2, key=str)
    assert seen[2:] == [("on_failure", "a", "failed", 2), ("on_failure", None, "failed", None)]
    assert "ValueError: always fails" in lines[2]["error"]
    assert lines[3]["error"] == "failed steps: a"


def test_a_raising_callback_is_recorded_and_changes_no_state(harness, tmp_path):
    run_id, state, lines = _run(harness, "cb_raise", tmp_path / "out.jsonl")
    assert state == "success"
    assert _seen(lines) == [("on_success", "a", "success", 1), ("on_success", None, "success", None)]
    assert {s["step"]: s["state"] for s in harness.store.step_runs(run_id)} == {"a": "success", "b": "success"}
    failed = [e for e in harness.store.events(run_id) if e["action"] == "callback_failed"]
    assert [(e["step"], e["reason"]) for e in failed] == [
        ("a", "step on_success callback (success): RuntimeError: on_success callback exploded"),
        (None, "flow on_success callback (success): RuntimeError: on_success callback exploded"),
    ]
    assert harness.store.get_run(run_id)["state"] == "success"


def test_a_step_the_scheduler_fails_runs_its_failure_callbacks(harness, tmp_path):
    run_id, state, lines = _run(harness, "cb_pool", tmp_path / "out.jsonl")
    assert state == "failed"
    assert _seen(lines) == [("on_failure", "a", "failed", None), ("on_failure", None, "failed", None)]
    assert 'pool "cb_missing_pool" does not exist' in lines[0]["error"]


def test_the_next_step_is_dispatched_before_the_callback_runs(harness, tmp_path):
    run_id = harness.trigger("cb_ok", {"out": str(tmp_path / "out.jsonl")})
    from flowkit.execution.attempt import run_attempt

    first = harness.dispatcher.sent.pop(0)
    run_attempt(harness.runtime, run_id, first.step.name, first.attempt)
    assert [d.step.name for d in harness.dispatcher.sent] == ["b"]  # queued by the same finish
    assert [(c.scope, c.kind, c.step) for c in harness.dispatcher.callbacks] == [("step", "on_success", "a")]
    assert not (tmp_path / "out.jsonl").exists()  # published, not run inline


def test_a_delivered_callback_runs_once_and_a_lost_publish_is_sent_again(harness, tmp_path):
    from flowkit.dispatch.callbacks import resend_due
    from flowkit.execution.callbacks import run_callback

    run_id = harness.trigger("cb_raise", {"out": str(tmp_path / "out.jsonl")})
    first = harness.dispatcher.sent.pop(0)
    from flowkit.execution.attempt import run_attempt

    run_attempt(harness.runtime, run_id, first.step.name, first.attempt)
    lost = harness.dispatcher.callbacks.pop()  # the publish never reached the broker
    harness.fake_clock.advance(301)  # type: ignore[attr-defined]
    resent = resend_due(harness.store, harness.dispatcher, "scheduler@test", harness.fake_clock())  # type: ignore[attr-defined]
    assert resent == 1 and harness.dispatcher.callbacks[-1].id == lost.id
    assert run_callback(harness.runtime, lost.id) == "failed"
    assert run_callback(harness.runtime, lost.id) == "done"  # a second delivery does nothing
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_an_attempt_lost_too_often_publishes_its_callbacks_at_once(harness, tmp_path):
    from datetime import timedelta

    from sqlalchemy import update

    from flowkit.execution.attempt import run_attempt
    from flowkit.store import tables as t

    run_id = harness.trigger("cb_fail", {"out": str(tmp_path / "out.jsonl")})
    harness.dispatcher.sent.clear()
    for n in range(3):  # three workers died running attempt 1
        assert (
            harness.store.claim_attempt(run_id, "a", 1, worker=f"w{n}", lost_after=30, max_deliveries=3).outcome
            == "run"
        )
        with harness.store.tx("test") as tx:
            tx.conn.execute(update(t.attempts).values(heartbeat_at=tx.now - timedelta(seconds=60)))
    assert run_attempt(harness.runtime, run_id, "a", 1) == "poison"
    # the delivery that failed it as poison published the retry callbacks (no sweep needed)
    assert sorted((c.scope, c.kind) for c in harness.dispatcher.callbacks) == [
        ("flow", "on_retry"),
        ("step", "on_retry"),
    ]
    harness.work()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all("poison" in e["error"] and e["attempt"] == 1 for e in lines) and len(lines) == 2


def test_specs_stored_before_callbacks_existed_still_load():
    spec = Flow("old").step("a", lambda: 1).spec().to_dict()
    del spec["callbacks"]
    for step in spec["steps"]:
        del step["callbacks"]
    loaded = FlowSpec.from_dict(spec)
    assert loaded.callbacks == () and loaded.step("a").callbacks == ()


def noop(ctx):
    return None


def two_args(ctx, extra):
    return None


def test_a_callback_that_is_not_callable_is_a_definition_error_at_its_line():
    with pytest.raises(DefinitionError) as err:
        Flow("x", on_failure="notify")  # L:cb-not-callable
    assert_where(err.value, HERE, "cb-not-callable", flow="x", step=None)
    assert "on_failure='notify' is not callable" in str(err.value)


def test_a_callback_with_the_wrong_arity_is_a_definition_error_at_its_line():
    with pytest.raises(DefinitionError) as err:
        Flow("x").step("a", noop, on_retry=two_args)  # L:cb-arity
    assert_where(err.value, HERE, "cb-arity", flow="x", step="a")
    assert "on_retry=two_args(ctx, extra) cannot be called with one argument" in str(err.value)


def test_a_map_steps_callbacks_fire_for_the_map_step_and_its_retries_per_instance(harness, tmp_path):
    _, state, lines = _run(harness, "cb_map", tmp_path / "out.jsonl")
    assert state == "success"
    assert _seen(lines) == [("on_retry", "doubled[1]", "up_for_retry", 1), ("on_success", "doubled", "success", None)]


def test_a_compensation_does_not_fire_the_callbacks_of_the_step_it_undoes(harness, tmp_path):
    run_id, state, lines = _run(harness, "cb_saga", tmp_path / "out.jsonl")
    assert state == "failed" and harness.store.get_run(run_id)["outcome"] == "compensated"
    assert _seen(lines) == [("on_success", "charge", "success", 1)]
