"""Reliability on PostgreSQL: what only PostgreSQL refuses, its one-statement hot path, and
scheduler high availability with real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flowkit.execution.attempt import run_attempt
from flowkit.testing import InlineHarness

from .procs import active_and_standby, wait_for

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY_DAGS = str(ROOT / "tests" / "dags" / "reliability")
UNIT_LIMIT_DAGS = str(ROOT / "tests" / "dags" / "limits_unit")


def test_a_nul_byte_in_an_error_does_not_strand_the_attempt(pg_url, open_store):
    # PostgreSQL refuses NUL in text: the worker stores it escaped instead of failing to record
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, RELIABILITY_DAGS)
    run_id = h.trigger("nul")
    assert h.run_until_done(run_id) == "failed"
    (a,) = store.attempts(run_id)
    assert a["state"] == "failed" and "bad byte \\x00 in the message" in a["error"]


def test_the_one_statement_path_keeps_every_transition_and_the_ledger(pg_url, open_store):
    # Given PostgreSQL (claim and finish take the CTE path) and a fan-out with a join
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, UNIT_LIMIT_DAGS)
    run_id = h.trigger("wide")
    assert h.run_until_done(run_id) == "success"
    # Then every step has the same audit trail as on the generic path
    events = store.events(run_id)
    for step in ("root", "m00", "m39", "join"):
        moves = [(e["old_state"], e["new_state"]) for e in events if e["step"] == step and e["action"] == "step_state"]
        assert moves[-2:] == [("queued", "running"), ("running", "success")], (step, moves)
        assert moves[0][1] in ("queued", "scheduled")
    assert [e["new_state"] for e in events if e["action"] in ("run_created", "run_state")] == [
        "queued",
        "running",
        "success",
    ]
    assert {a["state"] for a in store.attempts(run_id)} == {"success"}
    assert store.get_run(run_id)["steps_left"] == 0
    assert all(used == held == 0 for used, held in store.ledger_balance().values())


def test_a_standby_scheduler_takes_over_within_15_s(make_cluster, open_store, pg_url, redis_url, tmp_path):
    # Given two schedulers on one PostgreSQL database, and a worker
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/engine")
    first, second = active_and_standby(cluster)
    store = open_store(pg_url)
    # When the active one is SIGKILLed
    os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Then the standby takes over within 15 s and runs new work
    wait_for(
        lambda: "active (holds the scheduler lease)" in second.log(),
        15,
        "the standby to take over",
        cluster,
        interval=0.1,
    )
    took_over = time.monotonic() - killed_at
    run_id = cluster.cli("trigger", "chain", "-p", f"log={tmp_path / 'log'}").stdout.strip()
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
    assert took_over < 15
    names = {s["name"] for s in store.schedulers()}
    assert len(names) == 2, names  # each scheduler has its own name


def test_only_claims_commit_without_waiting_for_the_disk(pg_url, open_store):
    # A claim lost in a database crash is harmless (the message is unacknowledged, the attempt
    # reads as queued); an outcome is not, so every other write keeps a flushed commit.
    from sqlalchemy import text

    store = open_store(pg_url)
    store.upgrade()
    with store.claim_engine.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with store.engine.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    # the worker's own connections for the one-statement claim and finish take the same
    # settings from those engines, in autocommit
    with store.hot_claims.connection() as hot:
        assert hot.raw.execute("SHOW synchronous_commit").fetchone()[0] == "off" and hot.raw.autocommit
    with store.hot_finishes.connection() as hot:
        assert hot.raw.execute("SHOW synchronous_commit").fetchone()[0] == "on" and hot.raw.autocommit
    # and a fan-out still runs end to end on the hot path, claims and outcomes on their own
    # connections, with one audit row per claim
    h = InlineHarness(store, UNIT_LIMIT_DAGS)
    run_id = h.trigger("wide")
    assert h.run_until_done(run_id) == "success"
    steps = store.step_runs(run_id)
    assert len(steps) > 2 and all(s["state"] == "success" for s in steps)
    started = [e for e in store.events(run_id) if e["action"] == "attempt_started"]
    assert len(started) == len(steps)


def test_the_hot_path_survives_connections_the_server_dropped(pg_url, open_store):
    # A database restart leaves dead connections in every pool (the claim's own included).
    # The one-statement claim and finish run on the driver connection: their errors must reach
    # the retry loop as SQLAlchemy's would, with the dead connection invalidated, or every
    # later claim fails on it (the fault suite's postgres-restart row stalled like that).
    import psycopg

    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, UNIT_LIMIT_DAGS)
    run_id = h.trigger("wide")
    for _ in range(5):  # a few steps: the pools hold connections, the run's key is cached
        item = h.dispatcher.sent.pop(0)
        run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(
        pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/test", autocommit=True
    ) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    assert dropped is not None and dropped[0] >= 2  # the claim's connection and the outcome's
    assert h.run_until_done(run_id) == "success"
    assert all(s["state"] == "success" for s in store.step_runs(run_id))
