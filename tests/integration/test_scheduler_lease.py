"""The scheduler lease on PostgreSQL: a frozen active scheduler is replaced, and its later
writes are refused (fencing). First with two lease objects and a short injected lease, then
with two real `flowkit scheduler` processes, one SIGSTOPped."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from flowkit.errors import LeaseLost
from flowkit.scheduler.lease import PostgresLease

from .procs import active_and_standby, wait_for, wait_for_a_full_sweep

ROOT = Path(__file__).resolve().parents[2]


def _write(store, actor: str) -> None:
    with store.tx(actor) as tx:
        tx.event("lease_probe", reason=f"written by {actor}")


def _probes(store) -> list[str]:
    return [e["actor"] for e in store.events() if e["action"] == "lease_probe"]


@pytest.fixture
def two_leases(pg_url, open_store):
    """Schedulers "a" and "b", each with its own store (as in two processes), a 1 s lease,
    and renewals left to the test (so "a" can freeze)."""
    stores = [open_store(pg_url), open_store(pg_url)]
    stores[0].upgrade()
    a, b = (
        PostgresLease(s, name, duration_seconds=1.0, renew_seconds=0.2, background=False)
        for s, name in zip(stores, "ab", strict=True)
    )
    return a, b


def test_a_frozen_holder_is_replaced_after_expiry_and_its_next_write_is_refused(two_leases):
    a, b = two_leases
    # Given "a" active: it writes; "b" stands by
    assert a.acquire() and a.held()
    assert not b.acquire()
    _write(a.store, "a")
    # and renewals keep "a" active past its lease
    for _ in range(4):
        time.sleep(0.4)  # the holder's pace between renewals (the scenario), not a wait for a process
        assert a.renew()
        assert not b.acquire()
    # When "a" freezes (no more renewals)
    frozen_at = time.monotonic()
    took_over = wait_for(lambda: b.acquire(), 5, "b to take the lease over", interval=0.05)
    # Then "b" takes over once the lease expired, with a higher token
    waited = time.monotonic() - frozen_at
    assert took_over and 0.8 <= waited < 2.5, waited
    assert b.token == a.token + 1
    _write(b.store, "b")
    # and the resumed "a" writes nothing: its transaction is refused, and it knows it lost
    with pytest.raises(LeaseLost, match="another scheduler took the lease over"):
        _write(a.store, "a")
    assert not a.held() and not a.renew()
    with pytest.raises(LeaseLost, match="does not hold the scheduler lease"):
        _write(a.store, "a")
    assert _probes(b.store) == ["a", "b"]


def test_a_takeover_waits_for_the_holders_transaction_in_flight(two_leases):
    a, b = two_leases
    assert a.acquire()
    # Given "a" busy inside a write transaction (its guard passed) when its lease expires
    order: list[str] = []

    def busy(tx, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            tx.conn.execute(text("SELECT pg_sleep(0.1)"))

    with a.store.tx("a") as tx:
        tx.event("lease_probe", reason="in flight")
        busy(tx, 1.2)
        taker = threading.Thread(target=lambda: order.append(f"b took over: {b.acquire()}"))
        taker.start()
        busy(tx, 0.5)
        # Then "b" waits for the row lock; "a"'s transaction commits first
        order.append("a committed")
    taker.join(10)
    assert order == ["a committed", "b took over: True"]
    assert _probes(b.store) == ["a"]


def test_a_holder_frozen_inside_a_transaction_does_not_block_the_takeover(two_leases, pg_url):
    a, b = two_leases
    assert a.acquire()
    # Given "a" frozen inside a transaction: it holds the lease row's KEY SHARE lock and
    # says nothing more to the server
    conn = a.store.engine.connect()
    trans = conn.begin()
    a.guard(conn)
    # When its lease expires, "b" takes over anyway: the server ends the idle transaction
    started = time.monotonic()
    wait_for(lambda: b.acquire(), 10, "b to take the lease over", interval=0.1)
    assert time.monotonic() - started < 5
    # Then the frozen transaction is gone with its session
    with pytest.raises(Exception, match="idle-in-transaction timeout|terminat|closed"):
        conn.execute(text("SELECT 1"))
    trans.close()
    conn.close()


def test_a_clean_release_hands_over_at_once(two_leases):
    a, b = two_leases
    assert a.acquire()
    a.release()
    assert b.acquire() and b.token == 2
    assert not a.held()


def test_status_shows_as_active_only_the_holder_of_a_live_lease(two_leases, pg_url):
    from click.testing import CliRunner

    from flowkit.cli import main

    def roles() -> dict[str, str]:
        out = CliRunner().invoke(main, ["--database-url", pg_url, "status", "--json", "--no-broker"]).output
        return {s["name"]: s["role"] for s in json.loads(out)["schedulers"]}

    a, b = two_leases
    for lease in (a, b):
        lease.store.register_scheduler(lease.holder, {"queue_high_watermark": 9, "queue_low_watermark": 3})
        lease.store.beat_scheduler(lease.holder, {"role": "active"})  # both claim it
    assert a.acquire()
    assert roles() == {"a": "active", "b": "standby"}
    text = CliRunner().invoke(main, ["--database-url", pg_url, "status", "--no-broker"]).output
    assert f"scheduler a: active, fencing token {a.token}, last heartbeat" in text
    assert "scheduler b: standby, last heartbeat" in text
    # When "a" stops renewing, its heartbeat fresh: once the lease expired it is not active
    wait_for(lambda: a.store.scheduler_lease()["expired"], 5, "a's lease to expire")
    a.store.beat_scheduler("a", {"role": "active"})
    assert roles() == {"a": "standby", "b": "standby"}


# -- two real schedulers ----------------------------------------------------------------------
def test_a_sigstopped_scheduler_is_replaced_and_writes_nothing_when_resumed(
    make_cluster, open_store, pg_url, redis_url, tmp_path
):
    # Given two schedulers on one PostgreSQL database (default lease: 10 s), and a worker
    cluster = make_cluster(pg_url, redis_url, dags="tests/dags/engine")
    first, second = active_and_standby(cluster)
    store = open_store(pg_url)
    a_name = f"scheduler@{socket.gethostname()}:{first.pid}"  # its actor in the audit trail
    warmup = cluster.cli("trigger", "chain", "-p", f"log={tmp_path / 'warmup'}").stdout.strip()
    wait_for(lambda: store.get_run(warmup)["state"] == "success", 60, "the first run to succeed", cluster)
    assert any(e["actor"] == a_name for e in store.events(warmup))  # the active one wrote
    # When the active one freezes and a run is triggered
    os.killpg(first.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        run_id = cluster.cli("trigger", "chain", "-p", f"log={tmp_path / 'log'}").stdout.strip()
        # Then the run starts within 15 s (the standby took the lease over)
        wait_for(lambda: store.get_run(run_id)["state"] != "queued", 15, "the run to start", cluster, interval=0.1)
        started_after = time.monotonic() - frozen_at
        # and status names the standby active, never the frozen one
        report = json.loads(cluster.cli("status", "--json", "--no-broker").stdout)
        roles = {s["name"]: s["role"] for s in report["schedulers"]}
        assert roles[f"scheduler@{socket.gethostname()}:{second.pid}"] == "active", roles
        assert roles[a_name] != "active", roles
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    resumed_at = time.time()
    # and the resumed one says it is no longer active, and writes nothing from then on
    wait_for(lambda: "no longer active" in first.log(), 15, "scheduler a to stand down", cluster)
    wait_for(lambda: store.get_run(run_id)["state"] == "success", 60, "the run to succeed", cluster)
    # a few of its loops after resuming: two standby heartbeats of its own after the stand-down,
    # and a full sweep of the active one
    beats = 0
    last = None

    def beat_twice() -> bool:
        nonlocal beats, last
        row = next(s for s in store.schedulers() if s["name"] == a_name)
        if row["heartbeat_at"] != last and row["heartbeat_at"].timestamp() >= resumed_at:
            beats, last = beats + 1, row["heartbeat_at"]
        return beats >= 2

    wait_for(beat_twice, 15, "scheduler a to stand by for two heartbeats", cluster)
    wait_for_a_full_sweep(store, cluster)
    late = [e for e in store.events() if e["actor"] == a_name and e["at"].timestamp() >= resumed_at]
    assert late == []
    assert store.scheduler_lease()["holder"] == f"scheduler@{socket.gethostname()}:{second.pid}"
    assert started_after < 15
    print(f"run started {started_after:.1f} s after the active scheduler froze")
