"""A sensor on real processes (PostgreSQL, Redis, a scheduler and ONE worker with one
process): between pokes the sensor holds no worker, so another flow's steps run on that
single slot while it waits; then its file appears and its run finishes.
Flows: tests/dags/sensors_it/flows.py."""

from __future__ import annotations

import json
from datetime import timedelta

from flowkit.loading.sync import sync_dags
from flowkit.spec import resolve_params

from .limits_support import explain
from .procs import wait_for

DAGS = "tests/dags/sensors_it"


def test_a_waiting_sensor_leaves_its_one_slot_worker_free(
    pg_url, redis_url, make_cluster, open_store, tmp_path, monkeypatch
):
    # Given a file sensor (every 1 s) and a scheduler with one worker of one process
    landing = tmp_path / "landing.csv"
    monkeypatch.setenv("FLOWKIT_TEST_SENSOR_FILE", str(landing))  # the daemons inherit it
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    store = open_store(pg_url)
    sync_dags(store, cluster.env["FLOWKIT_DAGS_FOLDER"])
    sensing = str(store.create_run(store.flow_spec("it_sensor_file"), {}, actor="test"))
    cluster.scheduler()
    cluster.worker("worker", concurrency=1)

    def sensor() -> dict:
        return next(s for s in store.step_runs(sensing) if s["step"] == "landed")

    wait_for(lambda: (sensor()["sensor_pokes"] or 0) >= 2, 60, "the sensor to poke twice", cluster)
    # When another flow's five steps (0.5 s each) run while the file is still missing
    spec = store.flow_spec("it_busy")
    # 2.5 s of steps: the sensor pokes at least twice while they run (every 1 s)
    busy = str(store.create_run(spec, resolve_params(spec, {"seconds": 0.5}), actor="test"))  # the sweep starts it
    wait_for(lambda: store.get_run(busy)["state"] in ("success", "failed"), 60, "the busy run to end", cluster)
    # Then they all ran on the one slot, between the sensor's pokes, while it kept waiting
    assert store.get_run(busy)["state"] == "success", explain(store, [busy], cluster)
    assert store.get_run(sensing)["state"] == "running"
    assert sensor()["state"] in ("up_for_retry", "queued", "running")
    run = store.get_run(busy)
    pokes = store.attempts(sensing, "landed")
    during = [a for a in pokes if a["started_at"] and run["started_at"] <= a["started_at"] <= run["ended_at"]]
    assert during, (run["started_at"], run["ended_at"], [a["started_at"] for a in pokes])
    assert all(a["state"] == "not_yet" for a in pokes if a["ended_at"])
    assert {a["worker"] for a in store.attempts(busy)} == {a["worker"] for a in pokes if a["worker"]}
    # and `flowkit runs show` says what the sensor is doing
    shown = cluster.cli("runs", "show", sensing).stdout
    assert f'said NotYet("{landing} does not exist yet")' in shown, shown
    assert "next poke at" in shown or "times out at" in shown, shown
    # When the file appears
    landing.write_text("id\n1\n")
    # Then the next poke sees it and the run finishes
    wait_for(lambda: store.get_run(sensing)["state"] in ("success", "failed"), 30, "the sensor's run to end", cluster)
    assert store.get_run(sensing)["state"] == "success", explain(store, [sensing], cluster)
    assert store.results(sensing) == {"landed": str(landing), "load": f"loaded {landing}"}
    final = sensor()
    assert final["sensor_last_said"] == "done" and final["sensor_pokes"] >= 3
    # every poke waited about a second for the next (no worker held it in between)
    starts = sorted(a["started_at"] for a in store.attempts(sensing, "landed"))
    assert all(later - earlier >= timedelta(seconds=0.9) for earlier, later in zip(starts, starts[1:], strict=False))
    details = json.loads(cluster.cli("runs", "show", sensing, "--json").stdout)
    [landed] = [s for s in details["steps"] if s["step"] == "landed"]
    assert landed["sensor"]["last_said"] == "done" and landed["sensor"]["next_poke_at"] is None
