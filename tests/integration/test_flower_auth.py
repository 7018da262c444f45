"""Flower behind basic auth, started by `flowkit flower` (PostgreSQL + Redis): a request
without credentials is refused (401), and with them Flower lists the run's `<flow>.<step>`
tasks under the task ids `flowkit runs show RUN --step S` printed.
Flows: tests/dags/obslogs/logs_flows.py."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from .procs import wait_for

DAGS = "tests/dags/obslogs"
USER, PASSWORD = "ops", "flower-test-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, auth: tuple[str, str] | None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def _tasks(port: int) -> dict[str, Any]:
    status, body = _get(port, "/api/tasks", (USER, PASSWORD))
    return body if status == 200 and isinstance(body, dict) else {}


def test_flower_behind_basic_auth_finds_the_tasks_runs_show_printed(make_cluster, open_store, pg_url, redis_url):
    # Given Flower with one basic-auth user, a scheduler and a worker sending task events
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, FLOWKIT_FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}")
    store = open_store(pg_url)
    port = _free_port()
    flower = cluster.start("flower", "flower", "--port", str(port))
    cluster.scheduler()
    cluster.worker()
    wait_for(lambda: "Visit me at" in flower.log(), 30, "Flower to start", cluster)
    # Then a request without credentials, or with a wrong password, is refused
    assert _get(port, "/api/tasks", None)[0] == 401
    assert _get(port, "/api/tasks", (USER, "wrong"))[0] == 401
    assert PASSWORD not in " ".join(open(f"/proc/{flower.pid}/cmdline").read().split("\0"))

    def run_once() -> str:
        run_id = cluster.cli("trigger", "logs_retry").stdout.strip()
        wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
        return run_id

    # (a warm-up run: "Visit me" is printed before Flower's event consumer is connected)
    warm = {a["task_id"] for a in store.attempts(run_once())}
    wait_for(lambda: warm & set(_tasks(port)), 30, "Flower to receive events", cluster)
    # When a run ends, and `runs show --step` prints each attempt's task id
    run_id = run_once()
    printed: dict[str, str] = {}
    for step in ("chatty", "quiet"):
        shown = cluster.cli("runs", "show", run_id, "--step", step).stdout
        for task_id, name in re.findall(r"^  task (\S+)  \(Flower: (\S+)\)$", shown, re.MULTILINE):
            printed[task_id] = name
    assert len(printed) == 3, printed  # chatty failed once, then succeeded; quiet once
    # Then with the credentials Flower lists those tasks, named <flow>.<step>
    tasks = wait_for(lambda: set(printed) <= set(_tasks(port)) and _tasks(port), 30, "Flower to see them", cluster)
    assert {tid: tasks[tid]["name"] for tid in printed} == printed
    assert set(printed.values()) == {"logs_retry.chatty", "logs_retry.quiet"}
