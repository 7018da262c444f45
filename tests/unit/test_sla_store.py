"""Deadlines against a real store (SQLite and PostgreSQL): statistics folded from finished
attempts, SLA actions raised once across sweeps and schedulers, missed scheduled runs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from flowkit import Deadline, Flow
from flowkit.sla.watch import SLA_AT_RISK, SLA_MISSED, check_deadlines
from flowkit.store import sla_ops
from flowkit.store import tables as t

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def work(ctx):
    return 1


def chain_flow(**flow_options):
    return Flow("nightly", **flow_options).step("a", work).then("b", work).then("c", work).spec(version="v1")


def add_flow(store, spec, *, schedule=None, created_at=T0 - timedelta(days=10)):
    with store.tx("test", T0) as tx:
        tx.conn.execute(
            insert(t.flow_versions).values(
                flow_name=spec.name,
                version="v1",
                path="dags/x.py",
                spec_json=spec.to_json(),
                source="",
                created_at=created_at,
            )
        )
        tx.conn.execute(
            insert(t.flows).values(name=spec.name, version="v1", path="dags/x.py", schedule=schedule, updated_at=T0)
        )


def add_run(store, flow, *, state, created_at, logical_date=None, steps=()):
    run_id = str(uuid.uuid4())
    with store.tx("test", created_at) as tx:
        tx.conn.execute(
            insert(t.runs).values(
                id=run_id,
                flow_name=flow,
                version="v1",
                state=state,
                params="{}",
                logical_date=logical_date,
                created_at=created_at,
                updated_at=created_at,
            )
        )
        for step, step_state, started_at in steps:
            tx.conn.execute(
                insert(t.step_runs).values(
                    run_id=run_id,
                    step=step,
                    state=step_state,
                    started_at=started_at,
                    updated_at=started_at or created_at,
                )
            )
    return run_id


def add_history(store, flow, seconds_per_step, runs=20, first_hour=0):
    """``runs`` finished runs whose steps each took ``seconds_per_step`` (after 2 s in the queue)."""
    for i in range(first_hour, first_hour + runs):
        start = T0 - timedelta(days=4) + timedelta(hours=i)
        run_id = add_run(store, flow, state="success", created_at=start)
        with store.tx("test", start) as tx:
            for n, (step, seconds) in enumerate(seconds_per_step.items()):
                began = start + timedelta(seconds=n * 100)
                tx.conn.execute(
                    insert(t.attempts).values(
                        run_id=run_id,
                        step=step,
                        number=1,
                        task_id=str(uuid.uuid4()),
                        state="success",
                        dispatched_at=began - timedelta(seconds=2),
                        started_at=began,
                        ended_at=began + timedelta(seconds=seconds),
                    )
                )


def audit(store, action):
    with store._conn() as conn:
        return conn.execute(select(t.events).where(t.events.c.action == action)).all()


def test_successes_fold_into_a_bounded_window(backend_store):
    add_flow(backend_store, chain_flow())
    add_history(backend_store, "nightly", {"a": 10, "b": 20, "c": 30}, runs=25)
    assert sla_ops.fold_successes(backend_store, T0, batch=40) == 40
    assert sla_ops.fold_successes(backend_store, T0, batch=40) == 35
    assert sla_ops.fold_successes(backend_store, T0) == 0
    stats = sla_ops.step_stats(backend_store, "nightly")
    assert {s: len(v.durations) for s, v in stats.items()} == {"a": 20, "b": 20, "c": 20}
    assert stats["b"].estimate() == (20.0, 2.0)


def test_raise_once_is_once_across_calls_and_schedulers(backend_store):
    kwargs = {"action": SLA_MISSED, "flow": "nightly", "reason": "late", "run_id": "r1"}
    assert sla_ops.raise_once(backend_store, "scheduler-1", T0, **kwargs)
    assert not sla_ops.raise_once(backend_store, "scheduler-2", T0, **kwargs)
    assert sla_ops.raise_once(backend_store, "scheduler-1", T0, **{**kwargs, "step": "b"})
    assert [(e.run_id, e.step, e.actor) for e in audit(backend_store, SLA_MISSED)] == [
        ("r1", None, "scheduler-1"),
        ("r1", "b", "scheduler-1"),
    ]


def test_a_slow_run_is_at_risk_once_then_missed_once(backend_store):
    spec = chain_flow(deadline=Deadline(within="6m"))
    add_flow(backend_store, spec)
    add_history(backend_store, "nightly", {"a": 60, "b": 60, "c": 60})
    created = T0
    run_id = add_run(
        backend_store,
        "nightly",
        state="running",
        created_at=created,
        steps=[("a", "success", created), ("b", "running", created + timedelta(seconds=62)), ("c", "pending", None)],
    )
    spec_of = {("nightly", "v1"): spec}.get

    def sweep(at_seconds, actor="scheduler-1"):
        return [
            e.action
            for e in check_deadlines(
                backend_store, actor, created + timedelta(seconds=at_seconds), lambda f, v: spec_of((f, v))
            )
        ]

    assert sweep(100) == []  # b on its estimate: finish ~ 100 + 22 + 62 s, well before 6 m
    assert sweep(300) == [SLA_AT_RISK]  # b 238 s in: past its p90, expected to go as long again
    assert sweep(310, "scheduler-2") == []
    assert sweep(360) == [SLA_MISSED]
    assert sweep(400) == [] and sweep(400, "scheduler-2") == []
    [at_risk] = audit(backend_store, SLA_AT_RISK)
    assert at_risk.run_id == run_id and "after its deadline" in at_risk.reason and "b -> c" in at_risk.reason


def test_a_step_deadline_is_missed_once(backend_store):
    spec = Flow("nightly").step("a", work).then("b", work, deadline=Deadline(within="2m")).spec(version="v1")
    add_flow(backend_store, spec)
    add_run(
        backend_store, "nightly", state="running", created_at=T0, steps=[("a", "running", T0), ("b", "pending", None)]
    )
    events = check_deadlines(backend_store, "s", T0 + timedelta(minutes=2), lambda f, v: spec)
    assert [e.action for e in events] == [SLA_MISSED] and 'step "b"' in events[0].reason
    assert check_deadlines(backend_store, "s", T0 + timedelta(minutes=3), lambda f, v: spec) == []


def test_a_scheduled_run_that_never_started_is_missed_with_no_run_id(backend_store):
    spec = Flow("daily", schedule="0 0 * * *", deadline=Deadline(by="00:30")).step("a", work).spec(version="v1")
    add_flow(backend_store, spec, schedule="0 0 * * *", created_at=T0 - timedelta(hours=12))
    now = T0  # 01:00: today's 00:00 interval has no run and its 00:30 deadline has passed
    events = check_deadlines(backend_store, "s", now, lambda f, v: spec)
    assert [e.action for e in events] == [SLA_MISSED]
    [row] = audit(backend_store, SLA_MISSED)
    assert row.run_id is None and row.flow_name == "daily"
    assert check_deadlines(backend_store, "s2", now + timedelta(minutes=5), lambda f, v: spec) == []


def test_folding_costs_the_same_per_step_end_whatever_the_history(backend_store):
    add_flow(backend_store, chain_flow())
    add_history(backend_store, "nightly", {"a": 1, "b": 1, "c": 1}, runs=60)
    sla_ops.fold_successes(backend_store, T0)
    add_history(backend_store, "nightly", {"a": 1, "b": 1, "c": 1}, runs=1, first_hour=60)
    began = time.perf_counter()
    assert sla_ops.fold_successes(backend_store, T0) == 3
    per_step_end_ms = (time.perf_counter() - began) * 1000 / 3
    print(f"fold cost per step end: {per_step_end_ms:.2f} ms")
    assert per_step_end_ms < 200


def test_an_attempt_committed_late_is_still_folded(backend_store):
    # Given a fold that has read every ended attempt
    add_flow(backend_store, chain_flow())
    add_history(backend_store, "nightly", {"a": 10, "b": 10, "c": 10}, runs=5, first_hour=10)
    assert sla_ops.fold_successes(backend_store, T0) == 15
    # When an attempt that ended before them commits only now (a slow commit, a worker's late clock)
    add_history(backend_store, "nightly", {"a": 99, "b": 10, "c": 10}, runs=1, first_hour=0)
    # Then the next fold takes it in all the same
    assert sla_ops.fold_successes(backend_store, T0) == 3
    assert sla_ops.step_stats(backend_store, "nightly")["a"].durations[-1] == 99.0
    assert sla_ops.fold_successes(backend_store, T0) == 0


def slow_run_setup(store, runs=1):
    spec = chain_flow(deadline=Deadline(within="6m"))
    add_flow(store, spec)
    add_history(store, "nightly", {"a": 60, "b": 60, "c": 60})
    ids = [
        add_run(
            store,
            "nightly",
            state="running",
            created_at=T0,
            steps=[("a", "success", T0), ("b", "running", T0 + timedelta(seconds=62)), ("c", "pending", None)],
        )
        for _ in range(runs)
    ]
    return spec, ids


def test_the_watch_recomputes_only_runs_that_changed_or_are_due(backend_store):
    from flowkit.sla.watch import DeadlineWatch

    spec, ids = slow_run_setup(backend_store, runs=4)
    watch = DeadlineWatch()

    def sweep(at_seconds):
        return [
            e.action for e in watch.check(backend_store, "s", T0 + timedelta(seconds=at_seconds), lambda f, v: spec)
        ]

    assert sweep(100) == [] and watch.last_recomputed == 4
    # b runs within its estimate: finish 184 s, slack 176 s, no look before 100 + 176 / 3 s
    assert sweep(102) == [] and watch.last_recomputed == 0
    # When a step of one run changes state (its audit event), that run alone is looked at again
    with backend_store.tx("test", T0 + timedelta(seconds=103)) as tx:
        tx.event("step_state", run_id=ids[0], step="b", old="running", new="running", reason="test")
    assert sweep(104) == [] and watch.last_recomputed == 1
    assert sweep(156) == [] and watch.last_recomputed == 0
    # Then the three others are due a look (the changed one was looked at later, at 104 s)
    assert sweep(160) == [] and watch.last_recomputed == 3


def test_the_watch_raises_at_risk_at_most_one_sweep_late(backend_store):
    """The same slow run as above, swept every 2 s by one watch: at risk is raised within one
    sweep of when a full recomputation would first raise it."""
    from flowkit.sla.watch import DeadlineWatch

    spec, _ = slow_run_setup(backend_store)
    full_store_first = None
    for second in range(100, 360, 2):  # what a memo-less check says, second by second
        finish = check_finish(backend_store, spec, second)
        if finish > 360:
            full_store_first = second
            break
    watch = DeadlineWatch()
    raised_at = None
    for second in range(100, 360, 2):
        events = watch.check(backend_store, "s", T0 + timedelta(seconds=second), lambda f, v: spec)
        if any(e.action == SLA_AT_RISK for e in events):
            raised_at = second
            break
    assert full_store_first is not None and raised_at is not None
    assert full_store_first <= raised_at <= full_store_first + 2


def check_finish(store, spec, second):
    """The predicted finish (seconds after T0) a fresh check computes at ``second``."""
    from flowkit.sla.predict import Prediction
    from flowkit.sla.watch import read_active_runs, run_checks

    now = T0 + timedelta(seconds=second)
    sla_ops.fold_successes(store, now)
    [run] = read_active_runs(store, now)
    [(_, _, prediction, _)] = list(run_checks(spec, run, sla_ops.step_stats(store, "nightly"), now))
    assert isinstance(prediction, Prediction)
    return (prediction.finish_at - T0).total_seconds()
