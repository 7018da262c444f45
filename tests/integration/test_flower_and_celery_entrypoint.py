"""`celery -A workers.app worker` is a drop-in worker, and Flower names tasks <flow>.<step>."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request

from .procs import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flower_tasks(port: int) -> dict:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=2) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except OSError:
        return {}


def test_celery_entrypoint_worker_and_flower_task_names(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given a scheduler, Flower, and a worker started the Celery way
    cluster = make_cluster(pg_url, redis_url, FLOWER_UNAUTHENTICATED_API="true")
    cluster.cli("db", "upgrade")
    cluster.scheduler()
    port = _free_port()
    flower = cluster.start("flower", "flower", "--port", str(port))
    cluster.start_command("celery-worker", [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "flowkit", "-c", "1",
        "-E", "--without-gossip", "--without-mingle", "-n", "celery-worker@%h"])
    wait_for(lambda: "Visit me at" in flower.log(), 30, "Flower to start", cluster)
    # When the orders flow runs
    run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}").stdout.strip()
    store = open_store(pg_url)
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
    # Then Flower lists the attempts by flow and step, with the deterministic task ids
    tasks = wait_for(lambda: len(_flower_tasks(port)) >= 8 and _flower_tasks(port), 30,
                     "Flower to see the tasks", cluster)
    names = {t["name"] for t in tasks.values()}
    assert {"orders.receive", "orders.route", "orders.update_accounting"} <= names
    ids = {a["task_id"] for a in store.attempts(run_id)}
    assert ids <= set(tasks)
    assert all(a["worker"] for a in store.attempts(run_id))
