"""What the scheduler's deadline check costs per sweep, with many active runs that have a
deadline (README "Deadlines and predicted SLAs").

Builds, on a PostgreSQL database of its own (dropped at the end), a chain flow of ``--steps``
steps with a deadline, a history of 20 successful runs, and ``--runs`` running runs each
half-way through its chain; then times the check (``flowkit.sla.watch``) as the scheduler's
sweep calls it: the first sweep, sweeps where nothing changed, and a sweep after one step of
a tenth of the runs ended.

    .venv/bin/python bench/sla_sweep.py --runs 200 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import insert, update

from flowkit import Deadline, Flow
from flowkit.sla.watch import DeadlineWatch
from flowkit.store import tables as t
from flowkit.store.sql import SqlStore

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def work(ctx: object) -> int:
    return 1


def build(store: SqlStore, runs: int, steps: int) -> tuple[object, list[str]]:
    names = [f"s{i:02d}" for i in range(steps)]
    flow = Flow("bench_sla", deadline=Deadline(within="4h")).step(names[0], work)
    for name in names[1:]:
        flow = flow.then(name, work)
    spec = flow.spec(version="v1")
    with store.tx("bench", T0) as tx:
        tx.conn.execute(
            insert(t.flow_versions).values(
                flow_name=spec.name, version="v1", path="x.py", spec_json=spec.to_json(), source="", created_at=T0
            )
        )
        tx.conn.execute(insert(t.flows).values(name=spec.name, version="v1", path="x.py", updated_at=T0))
    for i in range(20):  # the history: 20 successful runs, every step 10 s after 1 s in the queue
        start = T0 - timedelta(days=1) + timedelta(minutes=10 * i)
        run_id = _run(store, "success", start, {})
        with store.tx("bench", start) as tx:
            tx.conn.execute(
                insert(t.attempts),
                [
                    {
                        "run_id": run_id,
                        "step": name,
                        "number": 1,
                        "task_id": str(uuid.uuid4()),
                        "state": "success",
                        "dispatched_at": start + timedelta(seconds=11 * n),
                        "started_at": start + timedelta(seconds=11 * n + 1),
                        "ended_at": start + timedelta(seconds=11 * n + 11),
                    }
                    for n, name in enumerate(names)
                ],
            )
    active = []
    for _ in range(runs):
        half = steps // 2
        states = {n: ("success" if k < half else "running" if k == half else "pending") for k, n in enumerate(names)}
        active.append(_run(store, "running", T0, states))
    return spec, active


def _run(store: SqlStore, state: str, created: datetime, steps: dict[str, str]) -> str:
    run_id = str(uuid.uuid4())
    with store.tx("bench", created) as tx:
        tx.conn.execute(
            insert(t.runs).values(
                id=run_id,
                flow_name="bench_sla",
                version="v1",
                state=state,
                params="{}",
                created_at=created,
                updated_at=created,
                steps_left=sum(1 for s in steps.values() if s != "success"),
            )
        )
        if steps:
            tx.conn.execute(
                insert(t.step_runs),
                [
                    {"run_id": run_id, "step": n, "state": s, "started_at": created, "updated_at": created}
                    for n, s in steps.items()
                ],
            )
    return run_id


def end_one_step(store: SqlStore, run_ids: list[str], now: datetime) -> None:
    """A step of each of ``run_ids`` ends, as the machine writes it (the step row, the
    run's ``steps_left`` and the audit event)."""
    with store.tx("bench", now) as tx:
        for run_id in run_ids:
            tx.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(steps_left=t.runs.c.steps_left - 1))
            tx.event("step_state", run_id=run_id, step="s10", old="running", new="success", reason="bench")


def timed(fn: object) -> float:
    began = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name = f"flowkit_bench_sla_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    store = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        store.upgrade()
        spec, active = build(store, args.runs, args.steps)
        watch = DeadlineWatch()
        now = T0 + timedelta(minutes=1)
        spec_of = lambda f, v: spec  # noqa: E731
        first = timed(lambda: watch.check(store, "bench", now, spec_of))
        steady = [
            timed(lambda i=i: watch.check(store, "bench", now + timedelta(seconds=2 * (i + 1)), spec_of))
            for i in range(args.repeats)
        ]
        end_one_step(store, active[: len(active) // 10], now + timedelta(seconds=30))
        after = timed(lambda: watch.check(store, "bench", now + timedelta(seconds=31), spec_of))
        print(
            f"{args.runs} active runs x {args.steps} steps on PostgreSQL: first sweep {first:.1f} ms; "
            f"a sweep with nothing changed {statistics.median(steady):.1f} ms (median of {args.repeats}); "
            f"a sweep after {len(active) // 10} runs each ended a step {after:.1f} ms; "
            f"predictions recomputed by the last sweep: {watch.last_recomputed}"
        )
    finally:
        store.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
