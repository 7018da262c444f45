"""Per-step priority orders delivery on Redis and on RabbitMQ (priority queues declared)."""

from __future__ import annotations

import pytest

from .procs import wait_for


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_high_priority_steps_run_before_low_ones(broker, make_cluster, open_store, pg_url, request):
    # Given 12 low- and 12 high-priority steps that become ready together, queued while no
    # worker serves their queue (root runs on a worker of its own queue, "setup")
    url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    cluster = make_cluster(pg_url, url, dags="tests/dags/priority", FLOWKIT_FAST_FOLLOW_MAX="0")
    cluster.scheduler()
    store = open_store(pg_url)
    cluster.start("setup-worker", "worker", "-Q", "setup", "-c", "1", "-n", "setup@%h")
    run_id = cluster.cli("trigger", "prio").stdout.strip()
    wait_for(
        lambda: {s["state"] for s in store.step_runs(run_id) if s["step"] != "root"} == {"queued"},
        60,
        "every step queued",
        cluster,
    )
    # When one single-process worker drains the queue
    cluster.worker("drain", concurrency=1)
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 90, "the run to succeed", cluster)
    # Then the high-priority steps started first (a prefetched message or two may come early)
    order = [a["step"] for a in sorted(store.attempts(run_id), key=lambda a: a["started_at"]) if a["step"] != "root"]
    first_half = order[:12]
    assert sum(s.startswith("high") for s in first_half) >= 10, order
