"""The scheduler daemon delivers a flow's notify= webhook: a real scheduler and worker on
PostgreSQL and Redis, a failing flow, and an HTTP server on loopback that records the POST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from flowkit.loading.sync import sync_dags
from flowkit.notify.sender import list_notifications
from flowkit.spec import resolve_params

from .http_hook import serving
from .limits_support import explain, wait_runs_ended
from .procs import wait_for

FLOW = """
from flowkit import Flow
from flowkit.notify import Log, Webhook


def boom(ctx):
    raise RuntimeError("warehouse API down")


notify_it = Flow("notify_it", notify=[Webhook("{url}", on="run_failed", timeout="5s"), Log()]).step("only", boom)
"""


class Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    Hook.bodies = []
    with serving(Hook) as url:
        yield url


def test_the_scheduler_daemon_sends_a_failed_runs_webhook(
    pg_url, redis_url, make_cluster, open_store, tmp_path: Path, hook_url: str
) -> None:
    # Given a failing flow whose notify= sends run_failed to a webhook
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "notify_it.py").write_text(FLOW.replace("{url}", hook_url))
    cluster = make_cluster(pg_url, redis_url, dags=str(dags))
    store = open_store(pg_url)
    sync_dags(store, str(dags))
    spec = store.flow_spec("notify_it")
    run_id = str(store.create_run(spec, resolve_params(spec, {}), actor="test"))
    # When a scheduler and a worker run it
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=1)
    assert wait_runs_ended(store, [run_id], 60, cluster) == {run_id: "failed"}, explain(store, [run_id], cluster)
    # Then the scheduler's sender posts the run's failure once, and records it delivered
    wait_for(lambda: len(Hook.bodies) >= 1, 30, "the webhook to be called", cluster)
    wait_for(
        lambda: all(n["outcome"] == "delivered" for n in list_notifications(store, run_id)),
        30,
        "every notification of the run to be delivered",
        cluster,
    )
    assert [(b["kind"], b["run_id"], b["flow"]) for b in Hook.bodies] == [("run_failed", run_id, "notify_it")]
    kinds = sorted(n["kind"] for n in list_notifications(store, run_id))
    assert kinds == ["retries_exhausted", "run_failed"]
