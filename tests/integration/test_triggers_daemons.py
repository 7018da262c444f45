"""Flow and dataset triggers on real services: a scheduler and a worker subprocess on
PostgreSQL and Redis. A flow end and a dataset write each start a run that records its
parent, shown by `flowkit lineage`; a burst of dataset events with the scheduler SIGKILLed
while it consumes them gives exactly one run per event, none lost, none doubled."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flowkit.loading.sync import sync_dags
from flowkit.spec import resolve_params

from .limits_support import explain, wait_runs_ended
from .procs import wait_for

BURST = 150


def triggered(store: Any, flow: str) -> list[dict[str, Any]]:
    return [r for r in store.list_runs(flow, limit=100_000) if r["trigger"] in ("flow", "dataset")]


def test_a_flow_end_and_a_dataset_write_trigger_runs_shown_by_lineage(make_cluster, open_store, pg_url, redis_url):
    # Given: orders, with orders_report on its success and orders_data on its dataset write
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/flow_triggers")
    cluster.scheduler()
    cluster.worker(concurrency=2)
    store = open_store(pg_url)
    # When: orders runs once
    source = cluster.cli("trigger", "orders").stdout.strip()
    # Then: each triggered flow runs once, with orders' run as its parent
    wait_for(
        lambda: all(
            [r["state"] for r in triggered(store, flow)] == ["success"] for flow in ("orders_report", "orders_data")
        ),
        60,
        "the triggered runs to succeed",
        cluster,
    )
    (report,) = triggered(store, "orders_report")
    (data,) = triggered(store, "orders_data")
    assert report["parent_run_id"] == source and report["trigger"] == "flow"
    assert data["parent_run_id"] == source and data["trigger"] == "dataset"
    # and `flowkit lineage` shows the chain both ways with the events
    down = cluster.cli("lineage", source).stdout
    assert f"-> orders_report run {report['id']}" in down and f"-> orders_data run {data['id']}" in down
    assert f'flow "orders" run {source[:8]} ended success' in down
    assert 'dataset "s3://lake/orders" written by step load' in down
    up = cluster.cli("lineage", data["id"]).stdout
    assert f"<- orders run {source}" in up
    # the audit (success or failed) also ran; the lake flows saw nothing
    assert [r["parent_run_id"] for r in triggered(store, "orders_audit")] == [source]
    assert triggered(store, "lake_any") == []


def test_a_burst_with_the_scheduler_killed_mid_consumption_gives_one_run_per_event(
    make_cluster, open_store, pg_url, redis_url
):
    # Given: the target flow paused while a burst of writer runs each write the dataset once
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/trigger_burst")
    store = open_store(pg_url)
    sync_dags(store, cluster.env["FLOWKIT_DAGS_FOLDER"])
    store.pause_flow("burst_target", by="test")
    spec = store.flow_spec("burst_writer")
    writers = [str(store.create_run(spec, resolve_params(spec, {}), actor="test")) for _ in range(BURST)]
    scheduler = cluster.scheduler("scheduler-1")
    cluster.worker(concurrency=2)
    assert set(wait_runs_ended(store, writers, 180, cluster).values()) == {"success"}, explain(
        store, writers[:3], cluster
    )
    wait_for(lambda: store.pending_trigger_count("burst_target") == BURST, 30, "every event in the inbox", cluster)
    # When: the flow is unpaused and the scheduler is SIGKILLed once it has started consuming
    cluster.cli("flows", "unpause", "burst_target")
    wait_for(lambda: len(triggered(store, "burst_target")) >= 1, 60, "the first triggered run", cluster)
    scheduler.kill()
    at_kill = len(triggered(store, "burst_target"))
    cluster.scheduler("scheduler-2")
    # Then: exactly one run per event, each event consumed by exactly one run
    wait_for(lambda: store.pending_trigger_count("burst_target") == 0, 120, "every event consumed", cluster)
    runs = triggered(store, "burst_target")
    events = store.trigger_events(target_flow="burst_target")
    per_run = Counter(e["consumed_run_id"] for e in events)
    assert len(events) == BURST and len(runs) == BURST, f"killed at {at_kill} runs"
    assert set(per_run) == {r["id"] for r in runs} and set(per_run.values()) == {1}
    assert sorted(r["parent_run_id"] for r in runs) == sorted(writers)
    ids = [r["id"] for r in runs]
    assert set(wait_runs_ended(store, ids, 240, cluster).values()) == {"success"}
    print(f"burst {BURST}: scheduler killed with {at_kill} runs created; {len(runs)} runs, 0 lost, 0 duplicated")
