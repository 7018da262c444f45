"""Map steps on real processes: a scheduler and two prefork workers (3 processes each) over
PostgreSQL and Redis, shared by the tests of this module. Flows: tests/dags/maps_it/flows.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from flowkit.store.sql import SqlStore, as_utc

from ..unit import map_compensation_cases
from .limits_support import Span, assert_within, create_runs, explain, wait_runs_ended
from .procs import Cluster, wait_for
from .services import FAST_DETECTION, cluster_env, fresh_services

DAGS = "tests/dags/maps_it"


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, str]]:
    """A PostgreSQL database and the Redis test database, for the whole module."""
    with fresh_services() as urls:
        yield urls


@pytest.fixture(scope="module")
def cluster(services: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pg, broker = services
    env = cluster_env(pg, broker, DAGS, **FAST_DETECTION)
    c = Cluster(env, tmp_path_factory.mktemp("map-cluster"))
    c.scheduler()
    c.worker("worker-a", concurrency=3)
    c.worker("worker-b", concurrency=3)
    yield c
    c.close()


@pytest.fixture(scope="module")
def store(services: tuple[str, str]) -> Iterator[SqlStore]:
    s = SqlStore(services[0])
    yield s
    s.dispose()


def _instance_attempts(store: SqlStore, run_id: str) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for a in store.attempts(run_id):
        if "[" in a["step"]:
            out.setdefault(a["step"], []).append(a)
    return out


def test_a_map_of_2000_elements_gives_the_ordered_list_downstream(cluster, store):
    # Given a run whose first step returns range(2000)
    (run_id,) = create_runs(cluster, store, "it_squares", 1, n=2000)
    # When the workers take it
    states = wait_runs_ended(store, [run_id], 120, cluster)
    # Then it succeeds, every instance ran once, and "total" got the 2000 results in order
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    results = store.results(run_id, ["square", "total"])
    assert results["total"] == {"count": 2000, "ordered": True}
    assert results["square"][:4] == [0, 1, 4, 9] and results["square"][-1] == 1999**2
    by_instance = _instance_attempts(store, run_id)
    assert len(by_instance) == 2000 and all(len(a) == 1 for a in by_instance.values())
    run = store.get_run(run_id)
    steps = {s["step"]: s for s in store.step_runs(run_id) if s["step"] in ("square", "numbers")}
    wall = (as_utc(run["ended_at"]) - as_utc(run["started_at"])).total_seconds()
    map_wall = (as_utc(steps["square"]["ended_at"]) - as_utc(steps["square"]["started_at"])).total_seconds()
    print(f"\n2000-element map: run {wall:.2f} s, map step (expansion to last instance) {map_wall:.2f} s")


def test_an_instance_that_fails_twice_then_succeeds(cluster, store):
    (run_id,) = create_runs(cluster, store, "it_retried", 1)
    states = wait_runs_ended(store, [run_id], 60, cluster)
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    by_instance = _instance_attempts(store, run_id)
    assert [a["state"] for a in by_instance["flaky[1]"]] == ["failed", "failed", "success"]
    assert [len(by_instance[f"flaky[{i}]"]) for i in (0, 2)] == [1, 1]
    assert store.results(run_id, ["flaky"])["flaky"][1] == {"index": 1, "attempt": 3}


def test_max_parallel_holds_on_six_worker_processes(cluster, store, tmp_path):
    # Given a map of 12 instances of 0.3 s, at most 3 at once, and 6 worker processes
    log = tmp_path / "bodies.log"
    (run_id,) = create_runs(cluster, store, "it_capped", 1, n=12, sleep=0.3, log=str(log))
    states = wait_runs_ended(store, [run_id], 60, cluster)
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    atts = [a for a in store.attempts(run_id) if a["step"].startswith("square[")]
    assert len(atts) == 12

    def spans(start_key: str) -> list[Span]:
        return [
            Span(
                run_id,
                "it_capped",
                a["step"],
                as_utc(a[start_key]).timestamp(),
                as_utc(a["ended_at"]).timestamp(),
                None,
                1,
                None,
                "",
            )
            for a in atts
        ]

    # Then no instant saw more than 3 running, nor more than 3 queued or running, and 3 was reached
    assert assert_within(spans("started_at"), 3, "running instances (max_parallel=3)") == 3
    assert assert_within(spans("dispatched_at"), 3, "queued or running instances (max_parallel=3)") == 3
    bodies = []
    for line in log.read_text().splitlines():
        what, step, _attempt, _pid, at = line.split()
        bodies.append((float(at), 1 if what == "start" else -1))
    live = peak = 0
    for _, delta in sorted(bodies, key=lambda b: (b[0], b[1])):
        live += delta
        peak = max(peak, live)
    assert peak == 3


def test_a_worker_sigkilled_mid_map_loses_no_instance_and_reruns_no_finished_one(cluster, store, tmp_path):
    # Given a map of 30 instances of 0.3 s on the two workers
    log = tmp_path / "bodies.log"
    (run_id,) = create_runs(cluster, store, "it_slow", 1, n=30, sleep=0.3, log=str(log))
    victim = next(d for d in cluster.daemons if d.name == "worker-a")

    def victim_busy_and_some_done() -> bool:
        atts = [a for a in store.attempts(run_id) if a["step"].startswith("square[")]
        done = sum(a["state"] == "success" for a in atts)
        busy = [
            a
            for a in atts
            if a["state"] == "running" and a["worker"] and os.getpgid(int(a["worker"].rsplit(":", 1)[1])) == victim.pid
        ]
        return done >= 3 and len(busy) >= 2

    wait_for(victim_busy_and_some_done, 30, "worker-a to run instances after some finished", cluster)
    # When worker-a's whole process group is SIGKILLed mid-map and a replacement starts
    victim.kill()
    cluster.worker("worker-c", concurrency=3)
    states = wait_runs_ended(store, [run_id], 90, cluster)
    # Then the run succeeds with every instance's result, in order
    assert states[run_id] == "success", explain(store, [run_id], cluster)
    assert store.results(run_id, ["total"])["total"] == {"count": 30, "ordered": True}
    by_instance = _instance_attempts(store, run_id)
    assert len(by_instance) == 30
    assert all([a["state"] for a in atts] == ["success"] for atts in by_instance.values()), by_instance
    assert any(a[0]["deliveries"] >= 2 for a in by_instance.values()), "nothing was taken over from worker-a"
    # and no body started again after its instance's success was recorded
    succeeded_at = {step: as_utc(atts[0]["ended_at"]).timestamp() for step, atts in by_instance.items()}
    late = [
        line
        for line in log.read_text().splitlines()
        if line.startswith("start") and float(line.split()[4]) > succeeded_at[line.split()[1]]
    ]
    assert not late, f"bodies run again after a recorded success: {late}"
    assert store.get_run(run_id)["steps_left"] == 0
    for key, (used, held) in store.ledger_balance().items():
        assert used == held == 0, key


# -- compensation of map steps, in-process over PostgreSQL (the pg_fast finish included) ----
@pytest.mark.parametrize("case", map_compensation_cases.CASES, ids=lambda c: c.__name__)
def test_compensation_of_a_map_step_on_postgresql(pg_url, open_store, case):  # type: ignore[no-untyped-def]
    fresh = open_store(pg_url)
    fresh.upgrade()
    case(fresh)
