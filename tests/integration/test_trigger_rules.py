"""Every trigger rule on real processes (scheduler and prefork workers over PostgreSQL and
Redis), against the hand-written table of tests/trigger_table.py; and the two eager rules
starting while a slow upstream still runs."""

from __future__ import annotations

import json

from ..trigger_table import mismatches
from .procs import wait_for


def test_every_rule_and_the_eager_ones_on_real_workers(make_cluster, open_store, pg_url, redis_url):
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/triggers")
    store = open_store(pg_url)
    cluster.scheduler()
    cluster.worker("worker", concurrency=3)
    rules = cluster.cli("trigger", "rules", "--json")
    eager = cluster.cli("trigger", "eager", "--json")
    rules_id, eager_id = json.loads(rules.stdout)["run_id"], json.loads(eager.stdout)["run_id"]

    def ended(run_id: str) -> bool:
        return store.get_run(run_id)["state"] in ("success", "failed", "cancelled")

    wait_for(lambda: ended(rules_id) and ended(eager_id), 90, "both runs to end", cluster)
    states = {s["step"]: s["state"] for s in store.step_runs(rules_id)}
    assert mismatches(states) == []
    assert store.get_run(rules_id)["state"] == "failed"
    # one_success and one_failed did not wait for the 3 s step
    steps = {s["step"]: s for s in store.step_runs(eager_id)}
    assert steps["first_success"]["state"] == "success" and steps["first_failure"]["state"] == "success"
    assert steps["first_success"]["ended_at"] < steps["slow"]["ended_at"]
    assert steps["first_failure"]["ended_at"] < steps["slow"]["ended_at"]
