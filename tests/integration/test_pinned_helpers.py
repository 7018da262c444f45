"""A prefork worker with no dags folder runs the helper modules each run was pinned to."""

from __future__ import annotations

import sys
from pathlib import Path

from flowkit.loading.sync import sync_dags
from flowkit.spec import resolve_params

from .limits_support import explain, wait_runs_ended

FLOW = """
import helpers
from lib.db import table

from flowkit import Flow


def read(ctx):
    return {"helper": helpers.VALUE, "table": table()}


flow = Flow("pinned_it").step("read", read)
"""


def _write(dags: Path, value: int, table: str) -> None:
    (dags / "lib").mkdir(parents=True, exist_ok=True)
    (dags / "pinned_it.py").write_text(FLOW)
    (dags / "helpers.py").write_text(f"VALUE = {value}\n")
    (dags / "lib" / "__init__.py").write_text("")
    (dags / "lib" / "db.py").write_text(f"def table():\n    return {table!r}\n")


def test_an_edited_helper_never_changes_a_run_created_before(pg_url, redis_url, make_cluster, open_store, tmp_path):
    # Given a flow importing helpers from its dags folder, and a run created on that code
    dags, empty = tmp_path / "dags", tmp_path / "empty"
    empty.mkdir()
    _write(dags, 1, "orders")
    cluster = make_cluster(pg_url, redis_url, FLOWKIT_DAGS_FOLDER=str(dags))
    store = open_store(pg_url)
    sync_dags(store, str(dags))
    old = store.flow_spec("pinned_it")
    first = store.create_run(old, resolve_params(old, {}), actor="test")
    # When the helpers are edited, the dags synced, and a second run created
    _write(dags, 2, "orders_v2")
    sync_dags(store, str(dags))
    new = store.flow_spec("pinned_it")
    assert new.version != old.version
    second = store.create_run(new, resolve_params(new, {}), actor="test")
    # and one prefork worker process, in an empty directory with an empty dags folder, runs both
    cluster.start_command(
        "worker",
        [
            "sh",
            "-c",
            'cd "$0" && FLOWKIT_DAGS_FOLDER="$0" exec "$1" -m flowkit.cli worker -c 1 -n pinned@%h',
            str(empty),
            sys.executable,
        ],
    )
    cluster.scheduler()
    runs = [str(first), str(second)]
    states = wait_runs_ended(store, runs, 60, cluster)
    # Then each run used the helpers it was created with
    assert set(states.values()) == {"success"}, explain(store, runs, cluster)
    assert store.results(str(first))["read"] == {"helper": 1, "table": "orders"}
    assert store.results(str(second))["read"] == {"helper": 2, "table": "orders_v2"}
    workers = {a["worker"] for r in runs for a in store.attempts(r)}
    assert len(workers) == 1, f"one pool process ran both versions: {workers}"
    assert "ModuleNotFoundError" not in cluster.logs()
