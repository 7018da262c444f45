"""Map steps in-process (InlineHarness over SQLite and PostgreSQL, backend_store): expansion,
ordered results, skips, failures, per-instance retries, max_parallel, pools, and statements per
element flat from 60 to 600 elements (10,000: tests/integration/test_map_size.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from flowkit import Flow
from flowkit.cli import main
from flowkit.errors import DefinitionError, UnknownStepError
from flowkit.execution.attempt import run_attempt
from flowkit.spec import FlowSpec, instance_name, split_instance
from flowkit.testing import FakeClock

from ..store_backends import inline_harness
from . import map_compensation_cases

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "maps")


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def assert_balanced(store) -> None:  # type: ignore[no-untyped-def]
    for key, (used, held) in store.ledger_balance().items():
        assert used == held, f"ledger {key}: used {used}, held by live attempts {held}"


def in_flight(store, run_id, parent):  # type: ignore[no-untyped-def]
    return sum(1 for r in store.map_instances(run_id, parent) if r["state"] in ("queued", "running"))


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant; an end at t comes before a start at t."""
    marks = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda m: (m[0], m[1])
    )
    now = peak = 0
    for _, delta in marks:
        now += delta
        peak = max(peak, now)
    return peak


# -- definition ---------------------------------------------------------------------------
def square(ctx):  # type: ignore[no-untyped-def]
    return ctx.item * ctx.item


def test_map_adds_over_to_its_upstreams_and_round_trips_as_json():
    spec = (
        Flow("f")
        .step("numbers", square)
        .step("other", square)
        .map("sq", square, over="numbers", after="other", max_parallel=4, retries=2)
        .spec()
    )
    step = spec.step("sq")
    assert (step.kind, step.over, step.max_parallel, step.upstream) == ("map", "numbers", 4, ("numbers", "other"))
    assert FlowSpec.from_json(spec.to_json()) == spec
    # An instance resolves to its map step's options, under its own name, without the list.
    one = spec.step("sq[7]")
    assert (one.name, one.retry.retries, one.upstream) == ("sq[7]", 2, ("other",))
    with pytest.raises(KeyError):
        spec.step("numbers[1]")  # not a map step
    assert split_instance(instance_name("sq", 12)) == ("sq", 12) and split_instance("sq") == ("sq", None)


def test_a_spec_stored_before_map_steps_still_loads():
    data = json.loads(Flow("f").step("a", square).spec().to_json())
    for s in data["steps"]:
        del s["over"], s["max_parallel"]
    step = FlowSpec.from_dict(data).step("a")
    assert (step.over, step.max_parallel) == (None, None)


def test_map_misuse_is_a_one_line_definition_error():
    with pytest.raises(UnknownStepError) as wrong:
        Flow("f").step("numbers", square).map("sq", square, over="numbrs").spec()
    assert 'map step "sq" maps over "numbrs" (over=), which flow "f" does not define' in str(wrong.value)
    assert 'Did you mean "numbers"?' in str(wrong.value) and "test_map.py:" in str(wrong.value)
    with pytest.raises(DefinitionError, match='needs over="step"'):
        Flow("f").step("numbers", square).map("sq", square)
    with pytest.raises(DefinitionError, match="max_parallel=0 must be a whole number >= 1"):
        Flow("f").step("numbers", square).map("sq", square, over="numbers", max_parallel=0)
    with pytest.raises(DefinitionError, match="at most 88 characters"):
        Flow("f").step("numbers", square).map("s" * 89, square, over="numbers")
    with pytest.raises(DefinitionError, match="unknown option 'overr'"):
        Flow("f").step("numbers", square).map("sq", square, overr="numbers")  # type: ignore[call-arg]


# -- running --------------------------------------------------------------------------------
def test_downstream_gets_the_ordered_list_and_instances_get_item_and_index(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("squares", {"n": 7})
    sent: list[str] = []
    original = h.dispatcher.dispatch_many

    def record(items):  # type: ignore[no-untyped-def]
        items = list(items)
        sent.extend(i.step.name for i in items)
        return original(items)

    h.dispatcher.dispatch_many = record  # type: ignore[method-assign]
    h.runtime.dispatcher = h.dispatcher
    assert h.run_until_done(run_id) == "success"
    results = backend_store.results(run_id)
    assert results["square"] == [i * i for i in range(7)]
    assert results["total"] == {"count": 7, "sum": 91, "first": [0, 1, 4]}
    assert results["square[3]"] == 9
    # Each instance is its own published task (Flower shows <flow>.square[i]).
    assert {f"square[{i}]" for i in range(7)} <= set(sent)
    st = states(backend_store, run_id)
    assert st["square"] == "success" and all(st[f"square[{i}]"] == "success" for i in range(7))
    assert backend_store.get_run(run_id)["steps_left"] == 0


def test_instances_see_the_map_steps_other_upstreams_not_the_whole_list(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("with_config")
    assert h.run_until_done(run_id) == "success"
    assert backend_store.results(run_id)["noted"] == [
        {"item": i, "index": i, "config": {"mode": "fast"}} for i in range(3)
    ]


def test_an_empty_list_skips_the_map_step_and_downstream_follows_the_skip_rules(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("empty")
    assert h.run_until_done(run_id) == "success"
    st = states(backend_store, run_id)
    assert (st["square"], st["total"], st["cleanup"]) == ("skipped", "skipped", "success")
    assert not any("[" in name for name in st)
    assert (
        backend_store.last_reason(run_id, "square") == 'the list from "numbers" (over=) was empty: no instance to run'
    )


def test_a_result_that_is_not_a_list_fails_the_map_step_with_one_line(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("wrong_type")
    assert h.run_until_done(run_id) == "failed"
    assert states(backend_store, run_id)["square"] == "failed"
    reason = backend_store.last_reason(run_id, "square")
    assert reason == (
        'flow "wrong_type" map step "square": its upstream "numbers" (over=) must '
        'return a list, got dict; return a list from "numbers"'
    )
    assert "\n" not in reason
    assert [e["reason"] for e in backend_store.events(run_id) if e["action"] == "run_state"][
        -1
    ] == "failed steps: square"


def test_an_instance_that_skips_itself_gives_null_and_the_map_step_succeeds(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("skippy")
    assert h.run_until_done(run_id) == "success"
    st = states(backend_store, run_id)
    assert [st[f"even[{i}]"] for i in range(4)] == ["success", "skipped", "success", "skipped"]
    assert backend_store.results(run_id)["after"] == [10, None, 12, None]


def test_each_instance_is_retried_on_its_own(backend_store):
    clock = FakeClock()
    h = inline_harness(backend_store, DAGS, clock=clock)
    run_id = h.trigger("retried", {"n": 4})
    assert h.run_until_done(run_id, advance=clock.advance) == "success"
    by_step: dict[str, list[str]] = {}
    for a in backend_store.attempts(run_id):
        by_step.setdefault(a["step"], []).append(a["state"])
    assert by_step["flaky[2]"] == ["failed", "failed", "success"]
    assert all(by_step[f"flaky[{i}]"] == ["success"] for i in (0, 1, 3))
    assert backend_store.results(run_id)["flaky"][2] == {"index": 2, "attempt": 3}


def test_a_failed_instance_fails_the_map_step_after_the_others_finish(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("one_fails", {"n": 4})
    assert h.run_until_done(run_id) == "failed"
    st = states(backend_store, run_id)
    assert [st[f"work[{i}]"] for i in range(4)] == ["success", "failed", "success", "success"]
    assert (st["work"], st["after"], st["cleanup"]) == ("failed", "upstream_failed", "success")
    assert backend_store.last_reason(run_id, "work") == "1 of 4 instance(s) failed (the first: work[1])"
    run = backend_store.get_run(run_id)
    assert run["steps_left"] == 0
    run_reason = [e["reason"] for e in backend_store.events(run_id) if e["action"] == "run_state"][-1]
    assert "work" in run_reason and "work[" not in run_reason  # the map step speaks for its instances


def test_max_parallel_is_never_exceeded(backend_store):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("capped_map", {"n": 12})
    peak = 0
    for _ in range(100):
        while h.dispatcher.sent:
            peak = max(peak, in_flight(backend_store, run_id, "square"))
            item = h.dispatcher.sent.pop(0)
            run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
            h.scheduler.handle(h.events.wait(0))
            h.scheduler.grant()
        if backend_store.get_run(run_id)["state"] != "running":
            break
        h.scheduler.step_once(max_wait=0)
    assert backend_store.get_run(run_id)["state"] == "success"
    assert peak == 3
    # The same from the attempts' own times: queued (dispatched) until ended.
    atts = [a for a in backend_store.attempts(run_id) if a["step"].startswith("square[")]
    assert len(atts) == 12
    assert most_at_once([(a["dispatched_at"], a["ended_at"]) for a in atts]) == 3
    assert backend_store.results(run_id)["square"] == [i * i for i in range(12)]


def test_a_pool_on_a_map_step_limits_each_instance_through_the_ledger(backend_store):
    backend_store.set_pool("mpool", 2)
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("pooled_map", {"n": 8})
    peak_used = 0
    for _ in range(200):
        while h.dispatcher.sent:
            peak_used = max(peak_used, backend_store.ledger_balance()["pool:mpool"][0])
            assert in_flight(backend_store, run_id, "square") <= 2
            item = h.dispatcher.sent.pop(0)
            run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
            h.scheduler.handle(h.events.wait(0))
            h.scheduler.grant()
        if backend_store.get_run(run_id)["state"] != "running":
            break
        h.scheduler.step_once(max_wait=0)
    assert backend_store.get_run(run_id)["state"] == "success"
    assert peak_used == 2
    assert backend_store.results(run_id)["total"]["count"] == 8
    assert_balanced(backend_store)
    assert backend_store.ledger_balance()["pool:mpool"] == (0, 0)


def test_backpressure_holds_a_large_maps_instances_back(backend_store):
    from dataclasses import replace

    from flowkit.config import Settings

    # Given a broker queue whose high watermark is 40 messages (low 10)
    settings = replace(Settings(database_url=backend_store.url), queue_high_watermark=40, queue_low_watermark=10)
    h = inline_harness(backend_store, DAGS, settings=settings)
    run_id = h.trigger("squares", {"n": 300})
    deepest = 0
    for _ in range(500):
        while h.dispatcher.sent:
            deepest = max(deepest, len(h.dispatcher.sent))
            item = h.dispatcher.sent.pop(0)
            run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
            h.scheduler.handle(h.events.wait(0))
            h.scheduler.grant()
        if backend_store.get_run(run_id)["state"] != "running":
            break
        time.sleep(0.06)  # the harness's backpressure reads the depth every 50 ms
        h.scheduler.step_once(max_wait=0)
    # Then the 300 instances went out in waves that never filled the queue past 40
    assert backend_store.get_run(run_id)["state"] == "success"
    assert 10 <= deepest <= 40, deepest
    assert backend_store.results(run_id)["total"]["count"] == 300


def test_an_instance_lost_at_the_hard_time_limit_counts_as_failed_and_gives_back_its_slot(backend_store):
    backend_store.set_pool("mpool", 2)
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("pooled_map", {"n": 3})
    # Run "numbers", then claim square[0] as a worker that then dies at the hard limit.
    while not any(d.step.name.startswith("square[") for d in h.dispatcher.sent):
        item = h.dispatcher.sent.pop(0)
        run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
        h.scheduler.handle(h.events.wait(0))
        h.scheduler.grant()
    claim = backend_store.claim_attempt(run_id, "square[0]", 1, worker="doomed", lost_after=30, max_deliveries=3)
    assert claim.outcome == "run" and claim.item == 0
    effects = backend_store.fail_running_attempt(run_id, "square[0]", 1, actor="doomed", reason="killed")
    assert effects is not None
    h.dispatcher.sent = [d for d in h.dispatcher.sent if d.step.name != "square[0]"]
    assert h.run_until_done(run_id) == "failed"
    st = states(backend_store, run_id)
    assert (st["square[0]"], st["square[1]"], st["square[2]"], st["square"]) == (
        "failed",
        "success",
        "success",
        "failed",
    )
    assert_balanced(backend_store)


def test_runs_show_counts_a_large_maps_instances_and_shows_one_with_step(backend_store, monkeypatch):
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("squares", {"n": 25})
    assert h.run_until_done(run_id) == "success"
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", backend_store.url)
    monkeypatch.setenv("FLOWKIT_DAGS_FOLDER", DAGS)
    runner = CliRunner()
    out = runner.invoke(main, ["runs", "show", run_id]).output
    assert "square[0..24]  25 instances: success 25" in out
    assert "square[3]" not in out
    one = runner.invoke(main, ["runs", "show", run_id, "--step", "square[3]"])
    assert one.exit_code == 0, one.output
    assert "step square[3]  (map, 1 attempt)" in one.output and "state success" in one.output
    assert "instance 3 of map step square; item 3" in one.output and "result 9" in one.output
    data = json.loads(runner.invoke(main, ["runs", "show", run_id, "--json"]).output)
    square_entry = next(s for s in data["steps"] if s["step"] == "square")
    assert square_entry["instances"]["by_state"] == {"success": 25}
    bad = runner.invoke(main, ["runs", "show", run_id, "--step", "sqare[3]"])
    assert bad.exit_code != 0 and 'no step "sqare[3]"' in bad.output and 'Did you mean "square"?' in bad.output


def test_celery_names_each_instance_for_flower(sqlite_store):
    """An instance's Celery task is <flow>.<step>[i] (shadow=), with its own name in args."""
    from contextlib import nullcontext

    from flowkit.config import Settings
    from flowkit.dispatch.celery import CeleryDispatcher
    from flowkit.store.machine import Dispatch

    spec = Flow("f").step("numbers", square).map("sq", square, over="numbers").spec()
    sent: list[dict] = []  # type: ignore[type-arg]

    class App:
        def producer_or_acquire(self):  # type: ignore[no-untyped-def]
            return nullcontext(None)

        def send_task(self, name, **options):  # type: ignore[no-untyped-def]
            sent.append(options)

    dispatcher = CeleryDispatcher(App(), Settings(database_url=sqlite_store.url))
    assert dispatcher.dispatch_many([Dispatch("r", "f", spec.step("sq[7]"), 1, "t")]) == []
    assert sent[0]["shadow"] == "f.sq[7]" and sent[0]["args"] == ["r", "sq[7]", 1]
    assert sent[0]["headers"]["flowkit_step"] == "sq[7]"


# -- size --------------------------------------------------------------------------------------
@contextmanager
def _counting_statements(store, count: list[int]) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Count the statements ``store`` sends. On PostgreSQL the worker's claim and finish run on
    the driver's own connections (flowkit/store/hot.py, pg_fast.py), past SQLAlchemy's
    events: there every psycopg execute is counted, whatever connection it is on."""

    def bump(*_args):  # type: ignore[no-untyped-def]
        count[0] += 1

    if store.is_sqlite:
        event.listen(store.engine, "before_cursor_execute", bump)
        try:
            yield
        finally:
            event.remove(store.engine, "before_cursor_execute", bump)
        return
    import psycopg

    real = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany")}

    def counted(name):  # type: ignore[no-untyped-def]
        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            bump()
            return real[name](self, *args, **kwargs)

        return run

    for name in real:
        setattr(psycopg.Cursor, name, counted(name))
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(psycopg.Cursor, name, fn)


def _run_counting(store, flow: str, n: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    h = inline_harness(store, DAGS)
    count = [0]
    started = time.perf_counter()
    with _counting_statements(store, count):
        run_id = h.trigger(flow, {"n": n})
        assert h.run_until_done(run_id, max_rounds=200) == "success"
    assert store.results(run_id)["total"]["count"] == n
    return count[0], time.perf_counter() - started


def test_statements_per_instance_do_not_grow_with_the_map(backend_store):
    small, _ = _run_counting(backend_store, "squares", 60)
    large, _ = _run_counting(backend_store, "squares", 600)
    per_small, per_large = small / 60, large / 600
    # What the whole run costs per element stays flat over a tenfold size: no per-element
    # rescans. The 10,000-element run is in tests/integration/test_map_size.py.
    assert per_large <= per_small * 1.1, (per_small, per_large)
    assert per_large < statements_per_element_bound(backend_store)


def statements_per_element_bound(store) -> float:  # type: ignore[no-untyped-def]
    """The bound differs by backend, legitimately: SQLite runs the generic machine, about 12
    statements an element (BEGIN IMMEDIATE included); on PostgreSQL the fast path claims and
    finishes an instance in one statement each (flowkit/store/pg_fast.py), about 2 an element
    (psycopg's own BEGIN and COMMIT are not counted)."""
    return 15 if store.is_sqlite else 4


def test_a_map_step_marked_success_gives_downstream_its_instances_results_or_the_given_one(backend_store):
    # Given work over [0, 1, 2] where instance 1 fails: work failed, after upstream_failed
    h = inline_harness(backend_store, DAGS)
    run_id = h.trigger("one_fails_then_reads")
    assert h.run_until_done(run_id) == "failed"
    # When work is marked success without a result
    h.act(backend_store.mark_step(run_id, "work", "success", by="ann"))
    assert h.run_until_done(run_id) == "success"
    # Then after got the ordered list of the instances' results (null for the failed one)
    assert backend_store.results(run_id)["after"] == {"got": [0, None, 2]}
    # And with a result given, that is what downstream gets
    again = h.trigger("one_fails_then_reads")
    assert h.run_until_done(again) == "failed"
    h.act(backend_store.mark_step(again, "work", "success", by="ann", result="[7, 8, 9]"))
    assert h.run_until_done(again) == "success"
    assert backend_store.results(again)["after"] == {"got": [7, 8, 9]}


# -- compensation of map steps (cases shared with tests/integration/test_map.py) ------------
@pytest.mark.parametrize("case", map_compensation_cases.CASES, ids=lambda c: c.__name__)
def test_compensation_of_a_map_step(backend_store, case):  # type: ignore[no-untyped-def]
    case(backend_store)
