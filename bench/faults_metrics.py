"""The pure half of the fault-injection suite: execution-log parsing, per-scenario figures,
recovery times and the printed table. No processes, no SQL: unit-tested on synthetic data
(tests/unit/test_fault_suite.py). See bench/FAULTS.md for the definitions.

Inputs are plain dicts shaped like the store's rows (``SqlStore.step_runs`` /
``SqlStore.attempts``): datetimes or epoch floats for the timestamps.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Step states that end a step.
TERMINAL = frozenset({"success", "failed", "skipped", "upstream_failed", "cancelled"})
#: Final step states that count as "failed because of the fault" (the flow never fails).
FAILED = frozenset({"failed", "upstream_failed"})
#: Step states of a step the engine has handed out (or is about to again).
IN_FLIGHT = frozenset({"queued", "running", "up_for_retry"})

TARGET_RECOVERY_SECONDS = 60.0
#: Faults that kill no process running a step body. A body that ended and whose success is
#: not in the store is then the engine's loss (a finish it discarded), not the fault's: the
#: "discarded" count is a target for these only. After a worker kill, a body that ended just
#: before the kill, whose finish the kill cut off, runs again by design.
NO_BODY_KILLED = frozenset({"redis_restart", "pg_restart", "pg_crash", "scheduler_kill", "standby_kill"})


def ts(value: Any) -> float | None:
    """Epoch seconds from a datetime (naive = UTC), an ISO string or a number."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    parsed = datetime.fromisoformat(str(value))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def body_seconds(seed: int, step: str) -> float:
    """How long ``step``'s body sleeps in bench/fault_dags/faultflow.py (same formula)."""
    return random.Random(f"{seed}:{step}").uniform(0.02, 0.10)


# -- execution log ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    """One line of the execution log: one step body that ran to its end."""

    run_id: str
    step: str
    attempt: int
    pid: int
    start: float
    end: float


def parse_exec_log(text: str) -> tuple[list[Execution], int]:
    """Lines ``run<TAB>step<TAB>attempt<TAB>pid<TAB>start<TAB>end``; returns (executions, bad lines)."""
    out: list[Execution] = []
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            run_id, step, attempt, pid, start, end = parts
            out.append(Execution(run_id, step, int(attempt), int(pid), float(start), float(end)))
        except ValueError:
            bad += 1
    return out, bad


# -- faults and recovery -----------------------------------------------------------------------
@dataclass
class Fault:
    """One injected fault: ``start`` when it hit, ``end`` when the harness finished injecting it
    (the service is back, the replacement process launched; ``end == start`` for a kill that is
    not followed by anything). ``in_flight`` and ``pending`` are step names read from the
    store just before ``start`` and just after ``end`` (see ``affected_steps``)."""

    kind: str
    start: float
    end: float
    detail: str = ""
    trigger: str = ""
    in_flight: list[str] = field(default_factory=list)
    pending_after: list[str] = field(default_factory=list)
    recovery_seconds: float | None = None
    recovery_note: str = ""
    victim_pid: int = 0  # the process the fault was aimed at, while it ran ``victim_step``
    victim_step: str = ""
    victim_hit: bool | None = None  # was that body still running when the fault hit?


def victim_outcome(fault: Fault, executions: list[Execution]) -> tuple[bool, str]:
    """Was the target process still inside ``victim_step``'s body when the fault hit? The
    execution log has a line (written when the body returns) from that pid for that step only
    if the body returned; its end time says whether that was before the fault."""
    lines = [e for e in executions if e.pid == fault.victim_pid and e.step == fault.victim_step]
    if not lines:
        return True, (
            f"body of {fault.victim_step} was running at the fault (no execution line from pid {fault.victim_pid})"
        )
    last = max(lines, key=lambda e: e.end)
    gap = fault.start - last.end
    if gap < 0:
        return True, (
            f"body of {fault.victim_step} was running at the fault and returned {-gap:.3f} s "
            f"after it (pid {fault.victim_pid})"
        )
    return False, (
        f"body of {fault.victim_step} had returned {gap:.3f} s before the fault "
        f"(it hit the step's bookkeeping or an idle child)"
    )


def in_flight_steps(steps: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(s["step"] for s in steps if s["state"] in IN_FLIGHT)


def pending_steps(steps: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(s["step"] for s in steps if s["state"] == "pending")


def recovery(
    fault: Fault, final_steps: list[dict[str, Any]], attempts: list[dict[str, Any]]
) -> tuple[float | None, str]:
    """Seconds from ``fault.start`` until the run had recovered, or None if it never did.

    Recovered = both of:
      (a) every step that was in flight (queued, running, up for retry) just before the fault
          or just after its end has reached a terminal state: the latest such ``ended_at``;
      (b) the run got going again: the first successful attempt, ended after the fault, of a
          step that was still pending after the fault's end (new work was dispatched and ran).
          Skipped when no step was pending then (nothing was left to dispatch).
    """
    by_step = {s["step"]: s for s in final_steps}
    times: list[float] = []
    notes: list[str] = []
    stuck = [n for n in fault.in_flight if by_step.get(n, {}).get("state") not in TERMINAL]
    if stuck:
        return None, f"{len(stuck)} in-flight step(s) never ended, e.g. {', '.join(stuck[:3])}"
    ends = [ts(by_step[n].get("ended_at")) for n in fault.in_flight]
    ends_known = [e for e in ends if e is not None]
    if ends_known:
        times.append(max(ends_known))
        notes.append(f"in-flight steps ({len(fault.in_flight)}) done")
    if fault.pending_after:
        pending = set(fault.pending_after)
        done = [
            ts(a["ended_at"])
            for a in attempts
            if a["step"] in pending and a["state"] == "success" and a.get("ended_at") is not None
        ]
        done = [d for d in done if d is not None and d > fault.start]
        if not done:
            return None, "no step pending after the fault ever completed"
        times.append(min(done))
        notes.append("next new step completed")
    if not times:
        return 0.0, "nothing was in flight or pending"
    return max(0.0, max(times) - fault.start), "; ".join(notes)


# -- a scenario's row --------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    broker: str
    run_state: str
    steps: int
    steps_lost: int
    dup_after_success: int
    #: Step bodies that ran to their end and whose success the store does not hold.
    bodies_discarded: int
    failed_by_fault: int
    recovery_seconds: float | None  # worst fault; None = never recovered by the deadline
    faults_planned: int
    faults_injected: int
    misses: list[str] = field(default_factory=list)
    # context, not targets
    extra_executions: int = 0
    failed_attempts: int = 0
    redeliveries: int = 0
    not_terminal: int = 0
    success_without_execution: int = 0
    run_seconds: float | None = None
    wall_seconds: float = 0.0
    lost_examples: list[str] = field(default_factory=list)
    lost_detail: list[dict[str, Any]] = field(default_factory=list)
    dup_examples: list[str] = field(default_factory=list)
    discarded_examples: list[str] = field(default_factory=list)
    failed_examples: list[str] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.misses

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def compute_row(
    scenario: str,
    broker: str,
    run: dict[str, Any] | None,
    steps: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    executions: list[Execution],
    faults: list[Fault],
    *,
    faults_planned: int,
    run_id: str,
    wall_seconds: float = 0.0,
    target_recovery: float = TARGET_RECOVERY_SECONDS,
    note: str = "",
) -> Row:
    """The table row of one scenario from the store's rows at the deadline and the execution log."""
    execs = [e for e in executions if e.run_id == run_id]
    by_step: dict[str, list[Execution]] = defaultdict(list)
    for e in execs:
        by_step[e.step].append(e)
    success_end: dict[str, float] = {}
    for a in attempts:
        end = ts(a.get("ended_at"))
        if a["state"] == "success" and end is not None:
            success_end[a["step"]] = min(end, success_end.get(a["step"], math.inf))

    not_terminal = sorted(s["step"] for s in steps if s["state"] not in TERMINAL)
    no_exec = sorted(s["step"] for s in steps if s["state"] == "success" and not by_step.get(s["step"]))
    lost = sorted(set(not_terminal) | set(no_exec))
    dups = sorted(f"{e.step}#{e.attempt}" for e in execs if e.step in success_end and e.start > success_end[e.step])
    failed = sorted(s["step"] for s in steps if s["state"] in FAILED)
    discarded = discarded_bodies(execs, attempts, success_end)

    for f in faults:
        f.recovery_seconds, f.recovery_note = recovery(f, steps, attempts)
    recs = [f.recovery_seconds for f in faults]
    worst: float | None
    if not faults:
        worst = None
    elif any(r is None for r in recs):
        worst = None
    else:
        worst = max(r for r in recs if r is not None)

    misses = []
    if lost:
        misses.append("lost")
    if dups:
        misses.append("dup")
    if failed:
        misses.append("failed")
    if discarded and all(f.kind in NO_BODY_KILLED for f in faults):
        misses.append("discarded")
    if worst is None or worst > target_recovery:
        misses.append("recovery")
    if len(faults) < faults_planned:
        misses.append("faults")
    if any(f.victim_hit is False for f in faults):
        misses.append("aim")

    run_seconds = None
    if run is not None and run.get("ended_at") is not None and run.get("created_at") is not None:
        run_seconds = (ts(run["ended_at"]) or 0.0) - (ts(run["created_at"]) or 0.0)
    return Row(
        scenario=scenario,
        broker=broker,
        run_state=(run or {}).get("state", "missing"),
        steps=len(steps),
        steps_lost=len(lost),
        dup_after_success=len(dups),
        bodies_discarded=len(discarded),
        failed_by_fault=len(failed),
        recovery_seconds=worst,
        faults_planned=faults_planned,
        faults_injected=len(faults),
        misses=misses,
        extra_executions=sum(max(0, len(v) - 1) for v in by_step.values()),
        failed_attempts=sum(1 for a in attempts if a["state"] == "failed"),
        redeliveries=sum(max(0, int(a.get("deliveries") or 0) - 1) for a in attempts),
        not_terminal=len(not_terminal),
        success_without_execution=len(no_exec),
        run_seconds=run_seconds,
        wall_seconds=wall_seconds,
        lost_examples=lost[:10],
        dup_examples=dups[:10],
        failed_examples=failed[:10],
        discarded_examples=discarded[:10],
        lost_detail=_lost_detail(lost, steps, attempts, by_step),
        faults=[asdict(f) | {"in_flight": len(f.in_flight), "pending_after": len(f.pending_after)} for f in faults],
        note=note,
    )


def discarded_bodies(
    execs: list[Execution], attempts: list[dict[str, Any]], success_end: dict[str, float]
) -> list[str]:
    """``step#attempt`` of each execution that ran to its end before its step's success was
    recorded and is not the one recorded: per attempt, every execution beyond the one its
    success records, or all of them when that attempt did not succeed (faultflow's bodies
    never fail). Executions after the success are counted as duplicates, not here."""
    succeeded = {(a["step"], a["number"]) for a in attempts if a["state"] == "success"}
    before: dict[tuple[str, int], int] = defaultdict(int)
    for e in execs:
        if not (e.step in success_end and e.start > success_end[e.step]):
            before[(e.step, e.attempt)] += 1
    out = []
    for (name, number), count in sorted(before.items()):
        extra = count - 1 if (name, number) in succeeded else count
        out += [f"{name}#{number}"] * extra
    return out


def _lost_detail(
    lost: list[str],
    steps: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    execs: dict[str, list[Execution]],
    limit: int = 10,
) -> list[dict[str, Any]]:
    """For the first lost steps whose latest attempt exists: where each one was left."""
    state = {s["step"]: s["state"] for s in steps}
    latest: dict[str, dict[str, Any]] = {}
    for a in attempts:
        if a["step"] not in latest or a["number"] > latest[a["step"]]["number"]:
            latest[a["step"]] = a
    out = []
    for name in lost:
        a = latest.get(name)
        if a is None:
            continue
        out.append(
            {
                "step": name,
                "step_state": state.get(name),
                "attempt": a["number"],
                "attempt_state": a["state"],
                "deliveries": a.get("deliveries"),
                "worker": a.get("worker"),
                "dispatched_at": ts(a.get("dispatched_at")),
                "heartbeat_at": ts(a.get("heartbeat_at")),
                "error": a.get("error"),
                "executions": len(execs.get(name, [])),
            }
        )
        if len(out) >= limit:
            break
    return out


# -- soak ---------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def dispatch_latencies(attempts: Iterable[dict[str, Any]]) -> list[float]:
    """attempt started_at - dispatched_at, in seconds, for attempts that started."""
    out = []
    for a in attempts:
        start, disp = ts(a.get("started_at")), ts(a.get("dispatched_at"))
        if start is not None and disp is not None:
            out.append(start - disp)
    return out


def soak_summary(
    runs: list[dict[str, Any]],
    steps_by_run: dict[str, list[dict[str, Any]]],
    attempts_by_run: dict[str, list[dict[str, Any]]],
    executions: list[Execution],
) -> dict[str, Any]:
    lost = dups = 0
    latencies: list[float] = []
    for run in runs:
        rid = run["id"]
        row = compute_row(
            "soak",
            "",
            run,
            steps_by_run.get(rid, []),
            attempts_by_run.get(rid, []),
            executions,
            [],
            faults_planned=0,
            run_id=rid,
        )
        lost += row.steps_lost
        dups += row.dup_after_success
        latencies += dispatch_latencies(attempts_by_run.get(rid, []))
    states: dict[str, int] = defaultdict(int)
    for run in runs:
        states[run["state"]] += 1
    p99 = percentile(latencies, 99)
    return {
        "runs_triggered": len(runs),
        "runs_completed": states.get("success", 0),
        "runs_by_state": dict(states),
        "steps_lost": lost,
        "duplicated_successful_attempts": dups,
        "dispatch_latency_p50_s": percentile(latencies, 50),
        "dispatch_latency_p99_s": p99,
        "dispatch_latency_max_s": max(latencies) if latencies else None,
        "attempts": len(latencies),
    }


# -- printing -----------------------------------------------------------------------------------
def fmt_recovery(row: Row) -> str:
    if row.faults_injected == 0:
        return "no fault"
    if row.recovery_seconds is None:
        return "never"
    return f"{row.recovery_seconds:.1f}"


def format_table(rows: list[Row]) -> str:
    headers = [
        "scenario",
        "broker",
        "run state",
        "lost",
        "dup after ok",
        "discarded",
        "failed by fault",
        "recovery s",
        "faults",
        "result",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r.scenario,
                r.broker,
                r.run_state,
                str(r.steps_lost),
                str(r.dup_after_success),
                str(r.bodies_discarded),
                str(r.failed_by_fault),
                fmt_recovery(r),
                f"{r.faults_injected}/{r.faults_planned}",
                "ok" if r.ok else "MISS: " + ",".join(r.misses),
            ]
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(line.rstrip() for line in lines)


# -- daemon logs ----------------------------------------------------------------------------------
_NOISE = [
    (re.compile(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+\]?\s*"), ""),  # leading timestamp
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(\.\d+)?\b"), "<time>"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
]
_INTERESTING = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Error:|Exception|lost|Restoring|[Rr]edeliver")


def log_highlights(text: str, limit: int = 12) -> list[dict[str, Any]]:
    """The most frequent warning/error lines of a daemon log, with ids, numbers and times
    masked so repeats of one message count together; first occurrence kept verbatim."""
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not _INTERESTING.search(line):
            continue
        key = line.strip()
        for pattern, repl in _NOISE:
            key = pattern.sub(repl, key)
        key = key[:200]
        counts[key] += 1
        first.setdefault(key, line.strip()[:400])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"count": n, "line": first[k]} for k, n in top]
