"""Helpers for the concurrency-limit tests: create runs, read what ran when, and measure
the largest number of executions that overlapped at any instant."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flowkit.loading.sync import sync_dags
from flowkit.spec import resolve_params
from flowkit.store.sql import SqlStore, as_utc

from .procs import Cluster

POOL = "db"
POOL_SLOTS = 3
LOCK = "warehouse"


def flowkit(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``flowkit`` command, as an operator does (``Cluster.cli`` runs
    ``python -m flowkit.cli``)."""
    argv = [str(Path(sys.executable).with_name("flowkit")), *args]
    proc = subprocess.run(argv, env=cluster.env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"flowkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def prepare(cluster: Cluster, slots: int = POOL_SLOTS) -> None:
    """The pool, as an operator would make it (the database comes migrated)."""
    out = flowkit(cluster, "pools", "set", POOL, str(slots)).stdout
    assert f"pool {POOL}: {slots} slot(s)" in out, out


def create_runs(cluster: Cluster, store: SqlStore, flow: str, count: int, **params: Any) -> list[str]:
    """Load the dags folder into the store and queue ``count`` runs of ``flow`` (in this
    process: much faster than one `flowkit trigger` each). A scheduler starts queued runs
    when it starts, or at its next sweep."""
    sync_dags(store, cluster.env["FLOWKIT_DAGS_FOLDER"])
    spec = store.flow_spec(flow)
    ids = [
        store.create_run(spec, resolve_params(spec, params), actor="test", reason="limits test") for _ in range(count)
    ]
    assert all(ids)
    return [str(i) for i in ids]


def run_state(store: SqlStore, run_id: str) -> str:
    return str(store.get_run(run_id)["state"])


def wait_runs_ended(
    store: SqlStore, run_ids: list[str], timeout: float, cluster: Cluster, during: Callable[[], None] | None = None
) -> dict[str, str]:
    """Wait until every run is success or failed (calling ``during`` on each poll)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        if during is not None:
            during()
        states = {r: run_state(store, r) for r in run_ids}
        if all(s in ("success", "failed") for s in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for the runs to end: {states}\n{cluster.logs()}")


def explain(store: SqlStore, run_ids: Iterable[str], cluster: Cluster) -> str:
    lines = []
    for run_id in run_ids:
        for e in store.events(run_id):
            lines.append(
                f"{e['at']:%H:%M:%S.%f} {run_id[:8]} {e['actor']:<28} {e['action']:<18} "
                f"{e['step'] or '':<6} {e['old_state'] or ''}->{e['new_state'] or ''} {e['reason']}"
            )
    return "audit trail:\n" + "\n".join(lines[-300:]) + "\n" + cluster.logs()


# -- what ran when ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    run_id: str
    flow: str
    step: str
    start: float
    end: float
    pool: str | None
    slots: int
    lock: str | None
    lock_mode: str
    worker: str = ""

    @property
    def exclusive(self) -> bool:
        return self.lock is not None and self.lock_mode == "exclusive"

    @property
    def shared(self) -> bool:
        return self.lock is not None and self.lock_mode != "exclusive"

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.flow}/{self.run_id[:8]}/{self.step} [{self.start:.3f}, {self.end:.3f}] {self.worker}"


def _ts(value: datetime | None) -> float:
    stamp = as_utc(value)
    assert stamp is not None
    return stamp.timestamp()


def attempt_spans(store: SqlStore, run_ids: Iterable[str]) -> list[Span]:
    """Every attempt that ran, from its ``started_at`` (claimed by a worker) to its
    ``ended_at`` (the transaction that ended it and gave its slots back)."""
    spans = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        spec = store.flow_spec(run["flow_name"], run["version"])
        for a in store.attempts(run_id):
            if a["started_at"] is None:
                continue
            assert a["ended_at"] is not None, f"attempt still live: {a}"
            step = spec.step(a["step"])
            spans.append(
                Span(
                    run_id,
                    spec.name,
                    a["step"],
                    _ts(a["started_at"]),
                    _ts(a["ended_at"]),
                    step.pool,
                    step.slots,
                    step.lock,
                    step.lock_mode,
                    a["worker"] or "",
                )
            )
    return spans


def logged_spans(store: SqlStore, log: Path, killed_at: dict[int, float] | None = None) -> list[Span]:
    """Executions as the step functions logged them (wall clock in the pool child). An
    execution with no ``end`` line was killed: it ends at its process's ``killed_at``."""
    killed_at = killed_at or {}
    starts: dict[tuple[str, str, str, str], float] = {}
    spans: list[Span] = []
    specs: dict[str, Any] = {}

    def spec_of(run_id: str) -> Any:
        if run_id not in specs:
            run = store.get_run(run_id)
            specs[run_id] = store.flow_spec(run["flow_name"], run["version"])
        return specs[run_id]

    def span(key: tuple[str, str, str, str], start: float, end: float) -> Span:
        run_id, step_name, _attempt, pid = key
        spec = spec_of(run_id)
        step = spec.step(step_name)
        return Span(
            run_id, spec.name, step_name, start, end, step.pool, step.slots, step.lock, step.lock_mode, f"pid {pid}"
        )

    for line in log.read_text().splitlines():
        what, run_id, step_name, attempt, pid, at = line.split()
        key = (run_id, step_name, attempt, pid)
        if what == "start":
            starts[key] = float(at)
        else:
            spans.append(span(key, starts.pop(key), float(at)))
    for key, start in starts.items():
        pid = int(key[3])
        assert pid in killed_at, f"execution {key} has no end and its process was not killed"
        spans.append(span(key, start, killed_at[pid]))
    return spans


def max_overlap(spans: Iterable[Span], weight: Callable[[Span], int] = lambda s: 1) -> tuple[int, float]:
    """The largest total weight of spans live at one instant, and when. Spans that touch
    (one ends when the other starts) do not overlap."""
    points: list[tuple[float, int, int]] = []
    for s in spans:
        points.append((s.start, 1, weight(s)))
        points.append((s.end, 0, -weight(s)))  # at equal times, ends come first
    best, when, live = 0, 0.0, 0
    for at, _kind, delta in sorted(points):
        live += delta
        if live > best:
            best, when = live, at
    return best, when


def live_at(spans: Iterable[Span], at: float) -> list[Span]:
    return [s for s in spans if s.start <= at < s.end]


def assert_within(spans: list[Span], limit: int, what: str, weight: Callable[[Span], int] = lambda s: 1) -> int:
    """Assert no instant saw more than ``limit``; return the most seen."""
    most, when = max_overlap(spans, weight)
    assert most <= limit, f"{what}: {most} at once (limit {limit}) at {when:.3f}:\n  " + "\n  ".join(
        map(str, live_at(spans, when))
    )
    return most


# -- the ledger --------------------------------------------------------------------------------
def consistent_balance(store: SqlStore) -> dict[str, tuple[int, int]]:
    """The ledger against the holds of live attempts, from one snapshot (the store reads both
    in one REPEATABLE READ transaction, so a commit in between cannot fake a leak)."""
    return store.ledger_balance()


def unbalanced(balance: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: v for k, v in balance.items() if v[0] != v[1]}


def assert_ledger_empty(store: SqlStore) -> None:
    """Nothing runs: every limit's ``used`` is 0 and no live attempt holds anything."""
    balance = store.ledger_balance()
    assert balance, "the ledger has no rows at all"
    assert not unbalanced(balance), f"the ledger does not balance: {balance}"
    assert all(pair == (0, 0) for pair in balance.values()), f"slots still in use: {balance}"
    assert all(row["used"] == 0 for row in store.limits()), store.limits()


def assert_no_errors(cluster: Cluster) -> None:
    """No daemon logged an error or a traceback (a loop error, a deadlock, a failed step)."""
    bad = [
        f"{d.name}: {line}"
        for d in cluster.daemons
        for line in d.log().splitlines()
        if " ERROR " in line or "Traceback" in line or " CRITICAL " in line
    ]
    assert not bad, "daemons logged errors:\n" + "\n".join(bad[:20])
