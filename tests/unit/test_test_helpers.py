"""What the tests themselves lean on: the scheduler's sweep counter in its heartbeat (which
integration tests wait on instead of sleeping) and the SQLite templates copied per test."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from flowkit.store.sql import SqlStore, utcnow
from flowkit.testing import InlineHarness, SqliteTemplates

ENGINE_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "engine")


def test_each_sweep_is_counted_in_the_heartbeat_with_when_it_began(sqlite_store):
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    before = utcnow()
    h.scheduler.sweep()
    h.scheduler.sweep()
    (row,) = sqlite_store.schedulers()
    assert row["stats"]["sweeps"] == 2
    assert datetime.fromisoformat(row["stats"]["sweep_started_at"]) >= before


def _flows_and_files(store: SqlStore) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return (
        [(f["name"], f["version"]) for f in store.list_flows()],
        [(r["path"], r["hash"]) for r in store.dag_file_rows()],
    )


def test_a_store_from_the_templates_holds_what_a_fresh_sync_does(tmp_path, monkeypatch):
    templates = SqliteTemplates(tmp_path / "templates")
    fresh = SqlStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.upgrade()
    copies = [templates.store(tmp_path / f"copy{i}.db") for i in range(3)]
    try:
        monkeypatch.setattr(InlineHarness, "templates", None)
        InlineHarness(fresh, ENGINE_DAGS)  # a plain sync
        monkeypatch.setattr(InlineHarness, "templates", templates)
        # The first harness on a fresh store syncs, and the result is kept
        InlineHarness(copies[0], ENGINE_DAGS)
        assert _flows_and_files(copies[0]) == _flows_and_files(fresh)
        # the next is filled from it and holds the same flows and files
        assert templates.restore(copies[1], ENGINE_DAGS)
        assert _flows_and_files(copies[1]) == _flows_and_files(fresh)
        run_id = InlineHarness(copies[1], ENGINE_DAGS).trigger("chain", {"log": str(tmp_path / "log")})
        assert copies[1].get_run(run_id)["state"] == "running"
        # A store already written to is left alone
        copies[2].set_pool("db", 2)
        assert not templates.restore(copies[2], ENGINE_DAGS)
        assert _flows_and_files(copies[2]) == ([], [])
    finally:
        for s in (fresh, *copies):
            s.dispose()
