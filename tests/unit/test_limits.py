"""The slot ledger, limits, backpressure and fairness, in-process on SQLite and PostgreSQL.

The inline harness runs one attempt at a time, so these tests look at what is queued (holds
a slot) and what waits (state ``scheduled``) between attempts; the integration tests check
the same limits on real workers running in parallel.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from flowkit.config import Settings
from flowkit.execution.attempt import run_attempt
from flowkit.store.ledger import LOCK_CAPACITY

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "limits_unit")


def harness(store, **settings):  # type: ignore[no-untyped-def]
    base = replace(Settings(database_url=store.url), **settings)
    return inline_harness(store, DAGS, settings=base)


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def live_holds(store) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k: used for k, (used, _held) in store.ledger_balance().items()}


def assert_balanced(store) -> None:  # type: ignore[no-untyped-def]
    for key, (used, held) in store.ledger_balance().items():
        assert used == held, f"ledger {key}: used {used}, held by live attempts {held}"


def run_one(h) -> None:  # type: ignore[no-untyped-def]
    item = h.dispatcher.sent.pop(0)
    run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    h.scheduler.handle(h.events.wait(0))
    h.scheduler.grant()


def test_a_pool_never_has_more_steps_in_flight_than_slots(backend_store):
    # Given a pool of 3 slots and a run with 8 steps in it
    backend_store.set_pool("db", 3)
    h = harness(backend_store)
    run_id = h.trigger("pooled")
    run_one(h)  # root
    # Then 3 are queued holding a slot each, 5 wait
    st = states(backend_store, run_id)
    assert sum(st[f"p{i}"] == "queued" for i in range(8)) == 3
    assert sum(st[f"p{i}"] == "scheduled" for i in range(8)) == 5
    assert live_holds(backend_store)["pool:db"] == 3
    assert_balanced(backend_store)
    # When one finishes, the freed slot goes to a waiter at once
    run_one(h)
    assert live_holds(backend_store)["pool:db"] == 3
    assert sum(s == "scheduled" for s in states(backend_store, run_id).values()) == 4
    # And the run ends with every slot back
    assert h.run_until_done(run_id) == "success"
    assert live_holds(backend_store)["pool:db"] == 0
    assert_balanced(backend_store)


def test_an_exclusive_lock_runs_alone_and_shared_holders_together(backend_store):
    h = harness(backend_store)
    run_id = h.trigger("locked")
    run_one(h)  # root: 3 writers and 3 readers become ready
    queued = [d.step.name for d in h.dispatcher.sent]
    used = live_holds(backend_store)["lock:warehouse"]
    # either one writer alone, or readers only (never a writer beside anything)
    writers = [q for q in queued if q.startswith("w")]
    assert (writers and len(queued) == 1 and used == LOCK_CAPACITY) or (not writers and used == len(queued) >= 1)
    seen_shared_together = False
    while h.dispatcher.sent:
        queued = [d.step.name for d in h.dispatcher.sent]
        if any(q.startswith("w") for q in queued):
            assert len(queued) == 1, f"an exclusive holder ran beside {queued}"
        if sum(q.startswith("r") for q in queued) >= 2:
            seen_shared_together = True
        run_one(h)
    assert seen_shared_together
    assert h.run_until_done(run_id) == "success"
    assert live_holds(backend_store)["lock:warehouse"] == 0


def test_max_active_runs_and_steps_of_a_flow(backend_store):
    h = harness(backend_store)
    backend_store.sync_flow_caps([backend_store.flow_spec("capped")])
    first = h.trigger("capped")
    second = h.trigger("capped")
    # one run at a time: the second stays queued
    assert backend_store.get_run(second)["state"] == "queued"
    run_one(h)  # root of the first
    assert sum(s == "queued" for s in states(backend_store, first).values()) == 2  # max_active_steps
    assert h.run_until_done(first) == "success"
    assert h.run_until_done(second) == "success"
    # the second started only once the first had ended
    assert backend_store.get_run(second)["started_at"] >= backend_store.get_run(first)["ended_at"]
    assert_balanced(backend_store)


def test_global_cap_bounds_everything_in_flight(backend_store):
    h = harness(backend_store, max_in_flight=5)
    run_id = h.trigger("wide")
    run_one(h)
    assert len(h.dispatcher.sent) == 5
    assert live_holds(backend_store)["global"] == 5
    assert h.run_until_done(run_id) == "success"
    assert live_holds(backend_store)["global"] == 0
    assert_balanced(backend_store)


def test_backpressure_holds_dispatches_above_the_high_watermark(backend_store, caplog):
    # Given a broker queue that already holds 12 messages, and watermarks 20/10
    caplog.set_level(logging.INFO, logger="flowkit")
    h = harness(backend_store, queue_high_watermark=20, queue_low_watermark=10, fast_follow_max=4)
    h.dispatcher.depths["flowkit"] = 12
    run_id = h.trigger("wide")
    run_one(h)
    # Then the worker fast-followed nothing (queue above the low watermark), and the scheduler
    # filled the queue up to the high watermark, no further
    depth = h.dispatcher.queue_depth("flowkit")
    assert 12 < depth <= 20
    waiting = sum(s == "scheduled" for s in states(backend_store, run_id).values())
    assert waiting == 40 - (depth - 12)
    assert "backpressure: queue flowkit" in caplog.text
    # When the queue drains below the low watermark, dispatching resumes until the run ends
    h.dispatcher.depths["flowkit"] = 0
    assert h.run_until_done(run_id) == "success"
    assert "dispatching again" in caplog.text


def test_waiters_of_two_runs_take_turns(backend_store):
    # Given a global cap of 2 and two runs whose 40 steps each become ready at once
    h = harness(backend_store, max_in_flight=2)
    a = h.trigger("wide")
    b = h.trigger("wide")
    order = []
    for _ in range(30):
        if not h.dispatcher.sent:
            break
        order.append(h.dispatcher.sent[0].run_id)
        run_one(h)
    # Then after both roots, dispatches alternate between the runs (neither starves)
    tail = order[4:20]
    assert tail.count(a) >= 6 and tail.count(b) >= 6, order


def test_a_step_asking_for_more_slots_than_its_pool_fails_with_the_fix(backend_store):
    backend_store.set_pool("db", 2)
    h = harness(backend_store)
    run_id = h.trigger("big_slots")
    assert h.run_until_done(run_id) == "failed"
    events = [e["reason"] for e in backend_store.events(run_id) if e["step"] == "greedy"]
    assert any('asks for 3 slots of pool "db", which has 2' in r and "flowkit pools set db 3" in r for r in events)
    assert_balanced(backend_store)


def test_pool_problems_are_reported_when_flows_load(backend_store):
    from flowkit.loading.sync import pool_problems

    h = harness(backend_store)  # loads the flows
    specs = [backend_store.flow_spec("big_slots"), backend_store.flow_spec("pooled")]
    problems = [str(p) for p in pool_problems(specs, {})]
    assert any('pool "db" does not exist' in p and "flowkit pools set db" in p for p in problems)
    problems = [str(p) for p in pool_problems(specs, {"db": 2})]
    assert problems == [p for p in problems if "asks for 3 slots" in p] and problems
    assert h


def test_branch_skips_propagate_through_counters(backend_store):
    h = harness(backend_store)
    run_id = h.trigger("branchy")
    assert h.run_until_done(run_id) == "success"
    st = states(backend_store, run_id)
    assert st == {"pick": "success", "a": "success", "b": "skipped", "after_b": "skipped", "join": "success"}


@pytest.mark.parametrize("fast_follow_max", [0, 16])
def test_the_same_run_with_and_without_fast_follow(backend_store, fast_follow_max):
    h = harness(backend_store, fast_follow_max=fast_follow_max)
    run_id = h.trigger("wide")
    assert h.run_until_done(run_id) == "success"
    steps = backend_store.step_runs(run_id)
    assert {s["state"] for s in steps} == {"success"}
    assert backend_store.get_run(run_id)["steps_left"] == 0


def test_a_worker_fast_follows_up_to_the_low_watermark_and_leaves_the_rest_to_the_scheduler(backend_store):
    # Given a queue holding 4 messages, watermarks 20/10, and no small fast-follow budget
    h = harness(backend_store, queue_high_watermark=20, queue_low_watermark=10, fast_follow_max=1000)
    h.dispatcher.depths["flowkit"] = 4
    run_id = h.trigger("wide")
    root = h.dispatcher.sent.pop(0)
    h.backpressure.gauges.clear()  # a worker's own reading (here it shares the scheduler's)
    # One reading for what follows: a reading taken again between the worker's publish and
    # its count of it (the harness's ttl is 50 ms; PostgreSQL's finish on a loaded machine
    # can take longer) counts those 6 twice, and the scheduler then stopped at 14.
    read_at = time.monotonic()
    h.backpressure.clock = lambda: read_at
    # When the root's worker finishes it (40 steps become ready at once)
    run_attempt(h.runtime, root.run_id, root.step.name, root.attempt)
    # Then it queued 6 itself (the queue at the low watermark), and 34 wait for the scheduler
    assert len(h.dispatcher.sent) == 6
    assert sum(s == "scheduled" for s in states(backend_store, run_id).values()) == 34
    # And the scheduler fills the queue to the high watermark, no further
    h.scheduler.handle(h.events.wait(0))
    h.scheduler.grant()
    assert h.dispatcher.queue_depth("flowkit") == 20
    h.backpressure.clock = time.monotonic
    h.dispatcher.depths["flowkit"] = 0
    assert h.run_until_done(run_id) == "success"


def test_a_worker_reads_the_queue_depth_again_when_its_reading_is_stale():
    from flowkit.dispatch.base import Backpressure

    # Given a worker whose last reading saw a full queue (its previous fan-out)
    depth, now = [600], [0.0]
    bp = Backpressure(lambda queue: depth[0], high=1000, low=500, ttl_seconds=0.25, clock=lambda: now[0])
    assert not bp.allow_fast("q")
    # When the queue has drained and the reading is older than its ttl
    depth[0] = 0
    now[0] = 0.3
    # Then the worker may fast-follow again (a stale reading blocked it for good)
    assert bp.allow_fast("q")
    assert bp.allow_fast("q", 500) and not bp.allow_fast("q", 501)
