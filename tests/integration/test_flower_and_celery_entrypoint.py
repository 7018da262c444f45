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
    cluster.scheduler()
    port = _free_port()
    flower = cluster.start("flower", "flower", "--port", str(port))
    cluster.start_command(
        "celery-worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            cluster.env["FLOWKIT_DEFAULT_QUEUE"],
            "-c",
            "1",
            "-E",
            "--without-gossip",
            "--without-mingle",
            "-n",
            "celery-worker@%h",
        ],
    )
    wait_for(lambda: "Visit me at" in flower.log(), 30, "Flower to start", cluster)
    store = open_store(pg_url)

    def run_orders() -> str:
        run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}").stdout.strip()
        wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
        return run_id

    # (a warm-up run: "Visit me" is printed before Flower's event consumer is connected)
    warm_ids = {a["task_id"] for a in store.attempts(run_orders())}
    wait_for(lambda: warm_ids & set(_flower_tasks(port)), 30, "Flower to receive events", cluster)
    # When the orders flow runs
    run_id = run_orders()
    ids = {a["task_id"] for a in store.attempts(run_id)}
    # Then Flower lists each attempt under its deterministic task id, named <flow>.<step>
    tasks = wait_for(
        lambda: ids <= set(_flower_tasks(port)) and _flower_tasks(port), 30, "Flower to see the tasks", cluster
    )
    names = {a["task_id"]: f"orders.{a['step']}" for a in store.attempts(run_id)}
    assert {tid: tasks[tid]["name"] for tid in ids} == names
    assert all(a["worker"] for a in store.attempts(run_id))
