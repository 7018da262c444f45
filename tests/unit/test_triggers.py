"""Flow and dataset triggers on both backends (flowkit/triggers, flowkit/store/trigger_ops.py):
state filters, all/any, bursts never collapsed unless asked, paused flows keeping their
events, each event consumed once, the parent and the event recorded on the run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowkit.testing import FakeClock

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "flow_triggers")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 12, 5, 12, tzinfo=UTC))


@pytest.fixture
def h(backend_store, clock):  # type: ignore[no-untyped-def]
    return inline_harness(backend_store, DAGS, clock=clock)


def run_flow(h: Any, flow: str, **params: Any) -> str:
    run_id: str = h.trigger(flow, params)
    h.run_until_done(run_id)
    return run_id


def triggered(h: Any, flow: str) -> list[dict[str, Any]]:
    """The runs of ``flow`` the triggers created, oldest first."""
    return sorted(
        (r for r in h.store.list_runs(flow, limit=10_000) if r["trigger"] in ("flow", "dataset")),
        key=lambda r: (r["created_at"], r["id"]),
    )


def consume(h: Any) -> None:
    """What the scheduler's sweep does with pending events, then run what it started."""
    h.scheduler.consume_triggers()
    while h.scheduler._triggers_more:
        h.scheduler.consume_triggers()
    h.work()


def test_flow_done_follows_its_state_filter_and_records_the_parent(h) -> None:  # type: ignore[no-untyped-def]
    # Given: orders succeeds once and fails once
    ok = run_flow(h, "orders")
    bad = run_flow(h, "orders", fail=True)
    assert h.store.get_run(bad)["state"] == "failed"
    # When: the scheduler consumes the events
    consume(h)
    # Then: the report (success only) ran once, the audit (success or failed) twice
    reports = triggered(h, "orders_report")
    audits = triggered(h, "orders_audit")
    assert [r["parent_run_id"] for r in reports] == [ok]
    assert [r["parent_run_id"] for r in audits] == [ok, bad]
    assert {r["trigger"] for r in reports + audits} == {"flow"}
    assert reports[0]["triggered_by"] == "flow:orders"
    assert h.store.get_run(reports[0]["id"])["state"] == "success"
    # the event is on the run and in its audit trail
    (event,) = h.store.trigger_events(consumed_run_id=reports[0]["id"])
    assert event["event_key"] == f"run:{ok}:success" and event["source_flow"] == "orders"
    trail = {e["action"]: e["reason"] for e in h.store.events(reports[0]["id"])}
    assert trail["run_created"] == f'flow "orders" run {ok[:8]} ended success'
    assert f"run:{ok}:success" in trail["trigger_consumed"]


def test_a_dataset_write_triggers_with_its_run_as_parent(h) -> None:  # type: ignore[no-untyped-def]
    writer = run_flow(h, "orders")
    consume(h)
    (run,) = triggered(h, "orders_data")
    assert run["trigger"] == "dataset" and run["parent_run_id"] == writer
    assert run["triggered_by"] == "dataset:s3://lake/orders"
    (event,) = h.store.trigger_events(consumed_run_id=run["id"])
    assert event["source_step"] == "load" and event["event_key"].startswith("ds:")
    # a failed writer wrote nothing: no event
    run_flow(h, "orders", fail=True)
    consume(h)
    assert len(triggered(h, "orders_data")) == 1


def test_any_runs_per_event_and_all_waits_for_every_dataset(h) -> None:  # type: ignore[no-untyped-def]
    run_flow(h, "writer_a")
    run_flow(h, "writer_a")
    consume(h)
    assert len(triggered(h, "lake_any")) == 2
    assert triggered(h, "lake_all") == []  # b not written yet: kept
    assert h.store.pending_trigger_count("lake_all") == 2
    b = run_flow(h, "writer_b")
    consume(h)
    assert len(triggered(h, "lake_any")) == 3
    (both,) = triggered(h, "lake_all")  # one complete set: the oldest a with the b
    keys = {e["source_flow"] for e in h.store.trigger_events(consumed_run_id=both["id"])}
    assert keys == {"writer_a", "writer_b"} and both["parent_run_id"] == b
    assert h.store.pending_trigger_count("lake_all") == 1  # the second a waits for a second b
    run_flow(h, "writer_b")
    consume(h)
    assert len(triggered(h, "lake_all")) == 2
    assert h.store.pending_trigger_count("lake_all") == 0


def test_a_burst_is_one_run_per_event_unless_the_flow_batches(h) -> None:  # type: ignore[no-untyped-def]
    writers = [run_flow(h, "writer_a") for _ in range(12)]
    consume(h)
    runs = triggered(h, "lake_any")
    assert sorted(r["parent_run_id"] for r in runs) == sorted(writers)  # 12 events, 12 runs
    (batched,) = triggered(h, "lake_batch")
    assert len(h.store.trigger_events(consumed_run_id=batched["id"])) == 12
    assert batched["triggered_by"] == "dataset:s3://lake/a +11"


def test_max_active_runs_queues_a_burst_and_starts_it_as_the_cap_allows(h) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        run_flow(h, "orders")
    h.scheduler.consume_triggers()
    states = sorted(r["state"] for r in triggered(h, "orders_data"))
    assert states == ["queued", "queued", "queued", "running", "running"]  # max_active_runs=2
    for _ in range(5):
        h.work()
        h.scheduler.step_once(max_wait=0)
    assert [r["state"] for r in triggered(h, "orders_data")] == ["success"] * 5


def test_a_paused_flow_keeps_its_events_and_runs_them_after_unpause(h) -> None:  # type: ignore[no-untyped-def]
    h.store.pause_flow("lake_any", by="ann")
    for _ in range(3):
        run_flow(h, "writer_a")
    consume(h)
    assert triggered(h, "lake_any") == []
    assert h.store.pending_trigger_count("lake_any") == 3
    h.act(h.store.unpause_flow("lake_any", by="ann"))
    consume(h)
    assert [r["state"] for r in triggered(h, "lake_any")] == ["success"] * 3
    assert h.store.pending_trigger_count("lake_any") == 0


def test_each_event_is_consumed_once_by_any_number_of_schedulers(h, backend_store, clock) -> None:  # type: ignore[no-untyped-def]
    run_flow(h, "writer_a")
    second = inline_harness(backend_store, DAGS, clock=clock)
    consume(h)
    consume(second)
    consume(h)
    assert len(triggered(h, "lake_any")) == 1
    # a scheduler that planned from a stale read loses the race: its run is rolled back
    run_flow(h, "writer_a")
    from flowkit.triggers.plan import Pending

    (row,) = [e for e in backend_store.trigger_events(target_flow="lake_any") if e["consumed_at"] is None]
    group = [Pending(row["id"], row["kind"], row["source"], row["source_run_id"], row["event_key"])]
    spec = backend_store.flow_spec("lake_any")
    first = backend_store._start_triggered("s1", spec, group, {})
    again = backend_store._start_triggered("s2", spec, group, {})
    assert first is not None and again is None
    assert len(triggered(h, "lake_any")) == 2


def test_events_of_a_condition_the_flow_dropped_are_consumed_without_a_run(h, backend_store) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from flowkit.store import tables as t

    run_flow(h, "writer_b")
    with backend_store.engine.begin() as conn:  # as if lake_any had stopped listening to b
        conn.execute(
            update(t.trigger_inbox).where(t.trigger_inbox.c.target_flow == "lake_any").values(source="s3://x/y")
        )
    consume(h)
    assert triggered(h, "lake_any") == []
    assert backend_store.pending_trigger_count("lake_any") == 0
    assert [e["action"] for e in backend_store.flow_events("lake_any")] == ["trigger_dropped"]


def test_the_telematics_example_starts_its_fleet_report_from_a_dataset_write(backend_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    examples = str(Path(__file__).resolve().parents[2] / "dags")
    h = inline_harness(backend_store, examples)
    source = run_flow(h, "telematics", workdir=str(tmp_path), samples=50)
    assert h.store.get_run(source)["state"] == "success"
    consume(h)
    (report,) = triggered(h, "fleet_report")
    assert report["parent_run_id"] == source and report["trigger"] == "dataset"
    assert report["triggered_by"] == "dataset:fleet://predictions"
    assert h.store.get_run(report["id"])["state"] == "success"
