"""Concurrency limits on real processes: a scheduler and prefork workers over PostgreSQL
and Redis. What ran when is read back from the attempts (``started_at`` is the claim by a
worker, ``ended_at`` the transaction that gave its slots back) and no instant may see more
executions than a limit allows; each test also checks that its limits were reached, or it
would prove nothing. Flows: tests/dags/limits/load.py."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from flowkit.store.ledger import LOCK_CAPACITY
from flowkit.store.sql import as_utc

from .limits_support import (
    LOCK,
    POOL,
    POOL_SLOTS,
    Span,
    assert_ledger_empty,
    assert_no_errors,
    assert_within,
    attempt_spans,
    consistent_balance,
    create_runs,
    explain,
    flowkit,
    logged_spans,
    max_overlap,
    prepare,
    unbalanced,
    wait_runs_ended,
)
from .procs import wait_for

DAGS = "tests/dags/limits"


def _in_pool(s: Span) -> bool:
    return s.pool == POOL


def _lock_weight(s: Span) -> int:
    return LOCK_CAPACITY if s.exclusive else 1


def test_every_limit_holds_under_load_and_is_reached(pg_url, redis_url, make_cluster, open_store):
    # Given a global cap of 5, a pool of 3 slots, an exclusive lock, a flow capped at 3
    # steps at once and a flow capped at one run at once; 9 runs, 120 steps; 6 processes
    cap = 5
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, FLOWKIT_MAX_IN_FLIGHT=str(cap))
    prepare(cluster)
    store = open_store(pg_url)
    runs = {flow: create_runs(cluster, store, flow, 3) for flow in ("lim_steps", "lim_single", "lim_wide")}
    all_runs = [r for ids in runs.values() for r in ids]
    # When the scheduler and two workers take them all at once
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=3)
    cluster.worker("worker-b", concurrency=3)
    samples: list[dict[str, tuple[int, int]]] = []

    def sample() -> None:
        samples.append(consistent_balance(store))

    states = wait_runs_ended(store, all_runs, 120, cluster, during=sample)
    # Then every run succeeds
    assert set(states.values()) == {"success"}, explain(store, all_runs, cluster)
    spans = attempt_spans(store, all_runs)
    assert Counter(s.flow for s in spans) == {"lim_steps": 3 * 14, "lim_single": 3 * 10, "lim_wide": 3 * 16}
    # no instant saw more executions than a limit allows, and each limit was reached
    assert assert_within(spans, cap, "in flight (FLOWKIT_MAX_IN_FLIGHT)") == cap
    assert (
        assert_within([s for s in spans if _in_pool(s)], POOL_SLOTS, f"pool {POOL}", weight=lambda s: s.slots)
        == POOL_SLOTS
    )
    lock_holders = [s for s in spans if s.lock == LOCK]
    assert lock_holders and all(s.exclusive for s in lock_holders)
    assert assert_within(lock_holders, 1, f"exclusive lock {LOCK}") == 1
    # (lim_steps shares the global cap with two other flows here, so whether it reaches its
    # own cap of 3 is up to timing: test_a_flow_step_cap_binds_when_nothing_else_does shows that)
    assert_within([s for s in spans if s.flow == "lim_steps"], 3, "lim_steps (max_active_steps=3)")
    # one run of lim_single at a time, although all three were queued together
    single = sorted((store.get_run(r) for r in runs["lim_single"]), key=lambda r: r["started_at"])
    run_spans = [
        Span(
            r["id"],
            "lim_single",
            "-",
            as_utc(r["started_at"]).timestamp(),
            as_utc(r["ended_at"]).timestamp(),
            None,
            1,
            None,
            "",
        )
        for r in single
    ]
    assert assert_within(run_spans, 1, "lim_single runs (max_active_runs=1)") == 1
    assert all(r["created_at"] < single[0]["ended_at"] for r in single), "the cap was never tested"
    assert all(a["ended_at"] <= b["started_at"] for a, b in zip(single, single[1:], strict=False))
    # and the slot ledger balanced in every snapshot taken while they ran, and is empty now
    assert len(samples) >= 5
    bad = [u for u in map(unbalanced, samples) if u]
    assert not bad, f"the ledger did not balance while runs went on: {bad[:5]}"
    assert max(s.get("global", (0, 0))[0] for s in samples) <= cap
    assert_ledger_empty(store)
    assert_no_errors(cluster)


def test_a_flow_step_cap_binds_when_nothing_else_does(pg_url, redis_url, make_cluster, open_store):
    # Given two runs of a flow capped at 3 steps at once over all its runs (24 side-by-side
    # steps), no global cap and 6 worker processes: only the flow's cap holds them back
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    prepare(cluster)
    store = open_store(pg_url)
    run_ids = create_runs(cluster, store, "lim_steps", 2, scale=2.0)
    # When they run
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=3)
    cluster.worker("worker-b", concurrency=3)
    states = wait_runs_ended(store, run_ids, 60, cluster)
    assert set(states.values()) == {"success"}, explain(store, run_ids, cluster)
    # Then never more than 3 of its steps ran at once, and 3 did
    spans = attempt_spans(store, run_ids)
    assert assert_within(spans, 3, "lim_steps (max_active_steps=3)") == 3
    assert_ledger_empty(store)
    assert_no_errors(cluster)


def test_an_exclusive_lock_excludes_everyone_and_shared_holders_overlap(
    pg_url, redis_url, make_cluster, open_store, tmp_path
):
    # Given two runs of a flow with 3 exclusive and 6 shared holders of one lock, 6 processes
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    prepare(cluster)
    store = open_store(pg_url)
    log = tmp_path / "executions.log"
    run_ids = create_runs(cluster, store, "lim_lock", 2, scale=2.0, log=str(log))
    # When they run
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=3)
    cluster.worker("worker-b", concurrency=3)
    states = wait_runs_ended(store, run_ids, 60, cluster)
    assert set(states.values()) == {"success"}, explain(store, run_ids, cluster)
    for spans in (attempt_spans(store, run_ids), logged_spans(store, log)):
        holders = [s for s in spans if s.lock == LOCK]
        exclusive = [s for s in holders if s.exclusive]
        shared = [s for s in holders if s.shared]
        assert (len(exclusive), len(shared)) == (6, 12)
        # Then an exclusive holder never overlaps another holder, exclusive or shared
        for x in exclusive:
            others = [s for s in holders if s is not x and s.overlaps(x)]
            assert not others, f"{x} overlaps {', '.join(map(str, others))}"
        assert assert_within(holders, LOCK_CAPACITY, f"lock {LOCK}", weight=_lock_weight) >= 2
        # and shared holders do run together
        most, _ = max_overlap(shared)
        assert most >= 2, "no two shared holders ever overlapped"
    assert_ledger_empty(store)
    assert_no_errors(cluster)


def _pool_in_use(store) -> int:  # type: ignore[no-untyped-def]
    return store.ledger_balance().get(f"pool:{POOL}", (0, 0))[0]


def test_ledger_balances_after_a_worker_holding_slots_is_sigkilled(
    pg_url, redis_url, make_cluster, open_store, tmp_path
):
    # Given a run whose 6 pool steps (3 slots) take 3 s each, on two workers
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    prepare(cluster)
    store = open_store(pg_url)
    log = tmp_path / "executions.log"
    (run_id,) = create_runs(cluster, store, "lim_hold", 1, scale=20.0, log=str(log))
    cluster.scheduler()
    workers = [cluster.worker("worker-a", concurrency=3), cluster.worker("worker-b", concurrency=3)]

    def victim_holding_slots():  # type: ignore[no-untyped-def]
        """The worker whose processes run the most pool steps, once the pool is full."""
        if _pool_in_use(store) < POOL_SLOTS or not log.exists():
            return None
        if (
            sum(line.startswith("start") and line.split()[2].startswith("p") for line in log.read_text().splitlines())
            < POOL_SLOTS
        ):
            return None  # claimed, but not all executing yet
        by_worker = Counter()
        for a in store.attempts(run_id):
            if a["state"] == "running" and a["holds"] and f"pool:{POOL}" in a["holds"]:
                by_worker[os.getpgid(int(a["worker"].rsplit(":", 1)[1]))] += 1
        if not by_worker:
            return None
        pgid, _ = by_worker.most_common(1)[0]
        return next(w for w in workers if w.pid == pgid)

    victim = wait_for(victim_holding_slots, 30, "the pool to be full of running steps", cluster)
    children = [
        int(a["worker"].rsplit(":", 1)[1])
        for a in store.attempts(run_id)
        if a["state"] == "running" and os.getpgid(int(a["worker"].rsplit(":", 1)[1])) == victim.pid
    ]
    balance_before = store.ledger_balance()
    assert balance_before[f"pool:{POOL}"][0] == POOL_SLOTS
    # When that worker's whole process group is SIGKILLed, and a replacement starts
    victim.kill()
    killed_at = time.time()
    cluster.worker("worker-c", concurrency=3)
    # Then the run completes, its lost steps run again elsewhere
    states = wait_runs_ended(store, [run_id], 90, cluster)
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    attempts = store.attempts(run_id)
    assert all(a["state"] == "success" for a in attempts), attempts
    assert any(a["deliveries"] >= 2 for a in attempts), "no attempt was taken over from the victim"
    # the ledger balances and is empty
    assert_ledger_empty(store)
    # and the pool and the lock held at every instant, counting the killed executions
    # (which ended when their processes died) as well as the attempts as recorded (a
    # taken-over attempt's started_at is its new start). The pool was full when the kill
    # came (above); after it, whether 3 overlap again depends on when the lost steps restart.
    for spans in (logged_spans(store, log, {pid: killed_at for pid in children}), attempt_spans(store, [run_id])):
        assert_within([s for s in spans if _in_pool(s)], POOL_SLOTS, f"pool {POOL}")
        assert_within([s for s in spans if s.lock == LOCK], 1, f"lock {LOCK}")
    cut_short = [s for s in logged_spans(store, log, {pid: killed_at for pid in children}) if s.end == killed_at]
    assert cut_short, "the victim was running nothing when killed"
    assert_no_errors(cluster)


def test_scheduler_restart_rebuilds_readiness_and_limits_from_sql(
    pg_url, redis_url, make_cluster, open_store, tmp_path
):
    # Given 3 runs of a flow with 6 pool steps each (3 slots), a lock and a global cap of 4
    cap = 4
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, FLOWKIT_MAX_IN_FLIGHT=str(cap))
    prepare(cluster)
    store = open_store(pg_url)
    log = tmp_path / "executions.log"
    run_ids = create_runs(cluster, store, "lim_hold", 3, scale=5.0, log=str(log))
    scheduler = cluster.scheduler("scheduler-1")
    cluster.worker("worker-a", concurrency=3)
    cluster.worker("worker-b", concurrency=3)

    def steps_waiting_while_pool_full() -> bool:
        waiting = [s for r in run_ids for s in store.step_runs(r) if s["state"] == "scheduled"]
        return bool(waiting) and _pool_in_use(store) == POOL_SLOTS

    wait_for(steps_waiting_while_pool_full, 30, "steps waiting for a full pool", cluster)
    # When the scheduler is SIGKILLed while steps wait for slots and others run
    scheduler.kill()
    # and the workers finish what they hold, giving slots back that nobody grants
    wait_for(lambda: _pool_in_use(store) < POOL_SLOTS, 30, "a pool slot to be given back", cluster)
    waiting = sum(s["state"] == "scheduled" for r in run_ids for s in store.step_runs(r))
    assert waiting > 0
    scheduler2 = cluster.scheduler("scheduler-2")
    # Then the new scheduler takes the waiters from SQL and every run completes
    states = wait_runs_ended(store, run_ids, 90, cluster)
    assert set(states.values()) == {"success"}, explain(store, run_ids, cluster)
    assert "rebuilding from SQL" in scheduler2.log()
    # with the limits held throughout, across both schedulers
    for spans in (attempt_spans(store, run_ids), logged_spans(store, log)):
        assert assert_within(spans, cap, "in flight (FLOWKIT_MAX_IN_FLIGHT)") == cap
        assert assert_within([s for s in spans if _in_pool(s)], POOL_SLOTS, f"pool {POOL}") == POOL_SLOTS
        assert_within([s for s in spans if s.lock == LOCK], 1, f"lock {LOCK}")
    # no step ran twice, and the ledger is empty
    attempts = [a for r in run_ids for a in store.attempts(r)]
    assert len(attempts) == 3 * 12 and all(a["number"] == 1 and a["state"] == "success" for a in attempts)
    assert_ledger_empty(store)
    assert_no_errors(cluster)


def test_status_json_on_a_live_cluster(pg_url, redis_url, make_cluster, open_store):
    # Given a live scheduler and worker running a flow that uses the pool
    cluster = make_cluster(pg_url, redis_url, dags=DAGS)
    prepare(cluster)
    store = open_store(pg_url)
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=2)
    run_id = cluster.cli("trigger", "lim_hold", "-p", "scale=10").stdout.strip()
    wait_for(lambda: _pool_in_use(store) >= 1, 30, "a pool step to hold a slot", cluster)
    # When an operator asks for the status
    report = json.loads(flowkit(cluster, "status", "--json").stdout)
    # Then it shows the scheduler alive, the pool with its slots and a balanced ledger
    assert [s["alive"] for s in report["schedulers"]] == [True], report["schedulers"]
    (pool,) = report["pools"]
    assert (pool["name"], pool["capacity"]) == (POOL, POOL_SLOTS)
    assert 1 <= pool["used"] <= POOL_SLOTS and pool["balanced"] is True, pool
    rows = report["pools"] + report["locks"] + report["flows"]
    assert all(r["balanced"] is True for r in rows), rows
    assert report["in_flight"].get("running", 0) >= 1
    assert cluster.env["FLOWKIT_DEFAULT_QUEUE"] in report["queues"]
    # and once the run is over, nothing is in use and everything still balances
    states = wait_runs_ended(store, [run_id], 60, cluster)
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    report = json.loads(flowkit(cluster, "status", "--json").stdout)
    assert [(p["name"], p["used"], p["balanced"]) for p in report["pools"]] == [(POOL, 0, True)]
    assert all(r["used"] == 0 and r["balanced"] for r in report["locks"]), report["locks"]
    assert report["waiting"] == 0 and not report["in_flight"].get("running")
    plain = flowkit(cluster, "status")
    assert "NO" not in plain.stdout.split(), plain.stdout
    assert_no_errors(cluster)


def test_ledger_balance_shows_equal_pairs_while_runs_go(pg_url, redis_url, make_cluster, open_store):
    """``SqlStore.ledger_balance()`` is what `flowkit status` calls "balanced": read on a busy
    cluster it must not report a leak that a consistent snapshot does not show."""
    # Given a busy cluster: a global cap, the pool, the lock and 3 runs of 16 steps
    cluster = make_cluster(pg_url, redis_url, dags=DAGS, FLOWKIT_MAX_IN_FLIGHT="5")
    prepare(cluster)
    store = open_store(pg_url)
    run_ids = create_runs(cluster, store, "lim_wide", 3)
    cluster.scheduler()
    cluster.worker("worker-a", concurrency=3)
    cluster.worker("worker-b", concurrency=3)
    # When the balance is read over and over while they run, both ways
    snapshots: list[dict[str, tuple[int, int]]] = []
    reported: list[dict[str, tuple[int, int]]] = []

    def sample() -> None:
        snapshots.append(consistent_balance(store))
        for _ in range(20):
            reported.append(store.ledger_balance())

    states = wait_runs_ended(store, run_ids, 60, cluster, during=sample)
    assert set(states.values()) == {"success"}, explain(store, run_ids, cluster)
    # Then the ledger itself always balanced (one snapshot: used == held by live attempts)
    assert len(snapshots) >= 5 and not [u for u in map(unbalanced, snapshots) if u]
    # and so did what ledger_balance() reported
    wrong = [u for u in map(unbalanced, reported) if u]
    assert not wrong, (
        f"ledger_balance() reported {len(wrong)} unbalanced reading(s) of {len(reported)} "
        f"while every one of {len(snapshots)} consistent snapshots balanced: {wrong[:3]}"
    )
    assert_ledger_empty(store)


def test_python_m_flowkit_cli_has_the_pools_and_status_commands():
    """`python -m flowkit.cli` (what tests/integration/procs.py runs) must offer the same
    commands as the installed `flowkit`."""
    import subprocess
    import sys

    for command in ("pools", "status"):
        proc = subprocess.run(
            [sys.executable, "-m", "flowkit.cli", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"python -m flowkit.cli {command} --help:\n{proc.stdout}{proc.stderr}"
