"""Soak mode of the fault-injection suite (``python -m bench.faults --soak MINUTES``).

Mixed flows (``faultflow``, ``fault_chain``, ``fault_fanout``; at most three runs in flight)
for N minutes on one scheduler and two ``worker -c 2`` (Redis broker, the suite's own
PostgreSQL), with a random worker SIGKILLed every 20-60 s (seeded) and a replacement started
each time. Then it waits up to the deadline for the runs to end and reports runs completed,
steps lost, duplicated successful attempts and dispatch latency (p50/p99/max).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.faults_infra import RUN_TERMINAL, SETTLE_SECONDS, Cluster, PgCluster
from bench.faults_metrics import parse_exec_log, soak_summary


def run_soak(
    minutes: float, pg: PgCluster, workdir: Path, deadline: float, seed: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Mixed flows for ``minutes`` with random worker SIGKILLs (replacement started each time)."""
    rng = random.Random(seed)
    c = Cluster("soak", workdir / "soak", pg, "redis")
    run_ids: list[str] = []
    kills: list[dict[str, Any]] = []
    try:
        c.start()
        c.wait_ready([c.start_scheduler(), c.start_worker(), c.start_worker()])
        t0 = time.time()
        stop_at = t0 + minutes * 60
        next_kill = t0 + rng.uniform(20, 60)
        while time.time() < stop_at:
            active = [r for r in run_ids if (c.run(r) or {}).get("state") not in RUN_TERMINAL]
            if len(active) < 3:
                flow = rng.choice(["faultflow", "fault_chain", "fault_fanout", "fault_fanout"])
                run_ids.append(c.trigger(flow, seed=rng.randrange(1000)))
            if time.time() >= next_kill:
                victim = rng.choice([w for w in c.workers if w.alive()])
                victim.kill()
                repl = c.start_worker()
                kills.append({"at": time.time() - t0, "killed": victim.name, "started": repl.name})
                say(f"  soak: +{time.time() - t0:.0f} s SIGKILL {victim.name}, started {repl.name}")
                next_kill = time.time() + rng.uniform(20, 60)
            time.sleep(1.0)
        say(f"  soak: {len(run_ids)} runs triggered; waiting up to {deadline:g} s for them to end")
        end_at = time.time() + deadline
        while time.time() < end_at:
            if all((c.run(r) or {}).get("state") in RUN_TERMINAL for r in run_ids):
                break
            time.sleep(1.0)
        time.sleep(SETTLE_SECONDS)
        runs = [c.run(r) or {"id": r, "state": "missing"} for r in run_ids]
        executions, _ = parse_exec_log(c.exec_log.read_text() if c.exec_log.exists() else "")
        summary = soak_summary(
            runs, {r: c.steps(r) or [] for r in run_ids}, {r: c.attempts(r) or [] for r in run_ids}, executions
        )
    finally:
        c.close()
    summary.update({"minutes": minutes, "worker_kills": kills, "logdir": str(c.dir)})
    return summary
