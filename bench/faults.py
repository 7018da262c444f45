"""Fault-injection suite: how a flowkit run survives killed daemons and restarted servers.

    python -m bench.faults [--only NAME[,NAME]] [--deadline 240] [--json PATH] [--keep-logs]
    python -m bench.faults --soak MINUTES
    python -m bench.faults --list

Every scenario runs a fresh run of ``faultflow`` (299 steps, bench/fault_dags/faultflow.py)
on daemons of its own: one ``flowkit scheduler`` and two ``flowkit worker -c 2`` at default
settings (only the database, broker, dags folder and queue names are set), a redis-server
and a database in a PostgreSQL cluster that the suite starts itself. It injects the
scenario's fault(s) while the run is in progress, then reads the store and the execution
log at the end of the run (or at the deadline) and prints one row per scenario:

    final run state, steps lost, step bodies run again after a recorded success, step bodies
    that ran to their end and whose success was discarded, steps failed because of the
    fault, recovery time (see bench/FAULTS.md for the definitions).

Targets at default settings: 0, 0, 0 (discarded: for faults that kill no step body), 0 and
recovery <= 60 s. A row that misses one is marked
MISS; the exit status is 1 if any row missed. Results also go to
bench/results/faults-<utc>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.faults_infra import (  # noqa: E402
    RUN_TERMINAL,
    SETTLE_SECONDS,
    Cluster,
    Daemon,
    InfraError,
    PgCluster,
)
from bench.faults_metrics import (  # noqa: E402
    TARGET_RECOVERY_SECONDS,
    TERMINAL,
    Fault,
    Row,
    body_seconds,
    compute_row,
    fmt_recovery,
    format_table,
    in_flight_steps,
    log_highlights,
    parse_exec_log,
    pending_steps,
    ts,
    victim_outcome,
)

RESULTS = ROOT / "bench" / "results"
POLL_SECONDS = 0.5
OUTAGE_SECONDS = 8.0
#: A database crash long enough for every step body running at the crash to end during it:
#: their claims, committed without waiting for the disk, may be gone after the restart.
CRASH_OUTAGE_SECONDS = 90.0
#: Inject the next fault anyway if its progress mark is not reached this long after the last.
FAULT_FALLBACK_SECONDS = 60.0
#: A SIGTERMed worker gets this long to exit before the group is SIGKILLed (Kubernetes' default
#: terminationGracePeriodSeconds).
TERM_GRACE_SECONDS = 30.0


class Interrupted(Exception):
    pass


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Interrupted("SIGTERM")


# -- scenario table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultPlan:
    kind: str
    at: float  # inject once this fraction of the steps has ended
    needs_running: bool = True  # ... and some attempt is running on a worker (up to 15 s more)


@dataclass(frozen=True)
class ScenarioDef:
    name: str
    broker: str  # redis | amqp
    plan: tuple[FaultPlan, ...]
    what: str
    redis_persistent: bool = False
    standby: bool = False


def _x3(kind: str) -> tuple[FaultPlan, ...]:
    return tuple(FaultPlan(kind, at) for at in (0.10, 0.35, 0.60))


SCENARIOS: list[ScenarioDef] = [
    ScenarioDef(
        "worker-sigkill-x3",
        "redis",
        _x3("worker_kill"),
        "SIGKILL one worker's process group at 10/35/60% of the steps; start a replacement each time",
    ),
    ScenarioDef(
        "worker-sigterm",
        "redis",
        (FaultPlan("worker_term", 0.30),),
        "SIGTERM one worker's process group (as systemd/Kubernetes do), then start it again",
    ),
    ScenarioDef(
        "pool-child-sigkill",
        "redis",
        (FaultPlan("child_kill", 0.30),),
        "SIGKILL one prefork pool child while it runs a step",
    ),
    ScenarioDef(
        "scheduler-sigkill-x3",
        "redis",
        _x3("scheduler_kill"),
        "SIGKILL the scheduler at 10/35/60% of the steps; start it again each time",
    ),
    ScenarioDef(
        "scheduler-standby",
        "redis",
        (FaultPlan("standby_kill", 0.30, needs_running=False),),
        "two schedulers from the start; SIGKILL the first (active) one, no restart",
        standby=True,
    ),
    ScenarioDef(
        "scheduler-sigstop",
        "redis",
        (FaultPlan("scheduler_stop", 0.30, needs_running=False),),
        "two schedulers from the start; SIGSTOP the active one until the standby took over, then SIGCONT it",
        standby=True,
    ),
    ScenarioDef(
        "redis-restart",
        "redis",
        (FaultPlan("redis_restart", 0.30),),
        f"stop the Redis broker (no persistence) for {OUTAGE_SECONDS:g} s, start it again",
    ),
    ScenarioDef(
        "redis-restart-aof",
        "redis",
        (FaultPlan("redis_restart", 0.30),),
        f"stop the Redis broker (AOF persistence) for {OUTAGE_SECONDS:g} s, start it again",
        redis_persistent=True,
    ),
    ScenarioDef(
        "postgres-restart",
        "redis",
        (FaultPlan("pg_restart", 0.30),),
        f"stop PostgreSQL (pg_ctl -m fast) for {OUTAGE_SECONDS:g} s, start it again",
    ),
    ScenarioDef(
        "postgres-crash-90s",
        "redis",
        (FaultPlan("pg_crash", 0.30),),
        f"crash PostgreSQL (pg_ctl -m immediate: no checkpoint, unflushed commits lost) and "
        f"keep it down {CRASH_OUTAGE_SECONDS:g} s, start it again",
    ),
    ScenarioDef(
        "worker-sigstop",
        "redis",
        (FaultPlan("worker_stop", 0.30),),
        "SIGSTOP one worker's process group, never continued (SIGKILLed at the end)",
    ),
    ScenarioDef("amqp-worker-sigkill-x3", "amqp", _x3("worker_kill"), "worker-sigkill-x3 on RabbitMQ"),
    ScenarioDef("amqp-worker-sigterm", "amqp", (FaultPlan("worker_term", 0.30),), "worker-sigterm on RabbitMQ"),
    ScenarioDef("amqp-pool-child-sigkill", "amqp", (FaultPlan("child_kill", 0.30),), "pool-child-sigkill on RabbitMQ"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# -- fault injection ------------------------------------------------------------------------------
def _running_on_workers(c: Cluster, attempts: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int, Daemon]]:
    """Running attempts whose recorded process belongs to one of our live, unstopped workers."""
    out = []
    for a in attempts:
        if a["state"] != "running" or not a.get("worker"):
            continue
        try:
            pid = int(str(a["worker"]).rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
        w = c.worker_of_pid(pid)
        if w is not None and not w.stopped_by_signal and pid in w.group_pids():
            out.append((a, pid, w))
    return out


def _pick_worker(c: Cluster, attempts: list[dict[str, Any]]) -> Daemon:
    running = _running_on_workers(c, attempts)
    counts: dict[int, int] = {}
    for _, _, w in running:
        counts[w.pid] = counts.get(w.pid, 0) + 1
    live = [w for w in c.workers if w.alive() and not w.stopped_by_signal]
    if not live:
        raise InfraError("no live worker to inject a fault into")
    return max(live, key=lambda w: (counts.get(w.pid, 0), -w.started_at))


def _fresh_target(
    c: Cluster, fresh_for: float = 5.0, give_up: float = 10.0
) -> tuple[tuple[dict[str, Any], int, Daemon] | None, list[dict[str, Any]], float]:
    """A running attempt on a pool child whose body has time left: steps last 20-100 ms, so a
    row read a moment ago may be stale. Polls the attempts every 10 ms for one whose body (its
    seeded sleep, known from the flow) has at least 30 ms left, and returns the one with the
    most; after ``fresh_for`` s any running one does; after ``give_up`` s, None (nothing runs:
    a stalled run). Also returns the rows and when they were read. Whether the body really was
    still running when the fault hit is checked after the run (``victim_outcome``)."""
    started = time.monotonic()
    while True:
        read_at = time.time()
        rows = c.attempts(c.run_id) or []
        running = [r for r in _running_on_workers(c, rows) if r[1] != r[2].pid]

        def left(r: tuple[dict[str, Any], int, Daemon]) -> float:
            return (ts(r[0]["started_at"]) or 0.0) + body_seconds(c.seed, r[0]["step"]) - time.time()

        roomy = [r for r in running if left(r) >= 0.03]
        waited = time.monotonic() - started
        if roomy or (running and waited > fresh_for):
            return max(roomy or running, key=left), rows, read_at
        if waited > give_up:
            return None, rows, read_at
        time.sleep(0.01)


def _target_worker(c: Cluster) -> tuple[Daemon, str, Any]:
    """The worker to hit (the one running the freshest step), a description, the target."""
    target, rows, read_at = _fresh_target(c)
    if target is None:
        victim = _pick_worker(c, rows)
        return victim, "no step was running on any worker", None
    a, pid, victim = target
    held = [f"{r['step']}#{r['number']}" for r, _, w in _running_on_workers(c, rows) if w is victim]
    t = time.time()
    desc = (
        f"running there: {held}; target {a['step']}#{a['number']} on pid {pid}, started "
        f"{t - (ts(a['started_at']) or 0.0):.3f} s before, rows read {t - read_at:.3f} s before"
    )
    return victim, desc, target


def _aim_note(c: Cluster) -> str:
    """Wait (as for a worker fault) until a step body is running, so an outage hits work in
    progress too; say which."""
    target, rows, _ = _fresh_target(c)
    running = [f"{r['step']}#{r['number']}" for r, _, _ in _running_on_workers(c, rows)]
    if target is None:
        return "no step was running"
    left = (ts(target[0]["started_at"]) or 0.0) + body_seconds(c.seed, target[0]["step"]) - time.time()
    return f"running at the fault: {running} ({target[0]['step']} had about {left * 1000:.0f} ms of body left)"


def _mark_victim(f: Fault, target: Any) -> Fault:
    if target is not None:
        f.victim_pid, f.victim_step = target[1], target[0]["step"]
    return f


def inject(c: Cluster, plan: FaultPlan) -> Fault:
    kind = plan.kind
    now = time.time
    if kind == "worker_kill":
        victim, desc, target = _target_worker(c)
        pids = victim.group_pids()
        t0 = now()
        victim.kill()
        repl = c.start_worker()
        return _mark_victim(
            Fault(kind, t0, now(), f"SIGKILL group of {victim.name} (pids {pids}), {desc}; started {repl.name}"), target
        )
    if kind == "worker_term":
        victim, desc, target = _target_worker(c)
        t0 = now()
        victim.signal_group(signal.SIGTERM)
        try:
            victim.proc.wait(timeout=TERM_GRACE_SECONDS)
            how = f"exited {victim.proc.returncode} after {now() - t0:.1f} s"
        except subprocess.TimeoutExpired:
            victim.signal_group(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            how = f"still running after {TERM_GRACE_SECONDS:g} s: group SIGKILLed"
        left = victim.group_pids()
        repl = c.start_worker()
        return _mark_victim(
            Fault(
                kind,
                t0,
                now(),
                f"SIGTERM group of {victim.name}, {desc}; {how}; left in its group: {left}; started {repl.name}",
            ),
            target,
        )
    if kind == "child_kill":
        target, _, read_at = _fresh_target(c, fresh_for=10.0, give_up=30.0)
        if target is None:
            raise InfraError("no pool child is running a step")
        a, pid, w = target
        t0 = now()
        os.kill(pid, signal.SIGKILL)
        return _mark_victim(
            Fault(
                kind,
                t0,
                t0,
                f"SIGKILL pool child {pid} of {w.name}, which ran "
                f"{a['step']}#{a['number']} (started {t0 - (ts(a['started_at']) or t0):.3f} s "
                f"before the kill, rows read {t0 - read_at:.3f} s before it)",
            ),
            target,
        )
    if kind == "scheduler_kill":
        victim = next(s for s in reversed(c.schedulers) if s.alive())
        t0 = now()
        victim.kill()
        repl = c.start_scheduler()
        return Fault(kind, t0, now(), f"SIGKILL {victim.name}; started {repl.name}")
    if kind == "standby_kill":
        victim = c.schedulers[0]
        t0 = now()
        victim.kill()
        others = [s.name for s in c.schedulers if s.alive()]
        return Fault(kind, t0, t0, f"SIGKILL {victim.name} (started first); still running: {others}")
    if kind == "scheduler_stop":
        return _freeze_active_scheduler(c)
    if kind == "redis_restart":
        assert c.redis is not None
        aim = _aim_note(c)
        t0 = now()
        c.redis.stop()
        time.sleep(OUTAGE_SECONDS)
        c.redis.start()
        return Fault(
            kind,
            t0,
            now(),
            f"redis-server SIGTERM (persistence: "
            f"{'AOF' if c.redis.persistent else 'none'}), down {OUTAGE_SECONDS:g} s, started again; {aim}",
        )
    if kind in ("pg_restart", "pg_crash"):
        # a clean stop (a checkpoint) for a short restart; a crash (unflushed commits lost) for a long one
        mode, outage = ("fast", OUTAGE_SECONDS) if kind == "pg_restart" else ("immediate", CRASH_OUTAGE_SECONDS)
        aim = _aim_note(c)
        t0 = now()
        c.pg.stop(mode)
        time.sleep(outage)
        c.pg.start()
        return Fault(kind, t0, now(), f"pg_ctl stop -m {mode}, down {outage:g} s, pg_ctl start; {aim}")
    if kind == "worker_stop":
        victim, desc, target = _target_worker(c)
        t0 = now()
        victim.signal_group(signal.SIGSTOP)
        victim.stopped_by_signal = True
        return _mark_victim(
            Fault(
                kind, t0, t0, f"SIGSTOP group of {victim.name} (pids {victim.group_pids()}), {desc}; never continued"
            ),
            target,
        )
    raise ValueError(f"unknown fault {kind}")


def _lease_holder(c: Cluster) -> str | None:
    try:
        lease = c.store.scheduler_lease()
    except Exception:  # the store is away for a moment: ask again
        return None
    return None if lease is None or lease["expired"] else str(lease["holder"])


def _freeze_active_scheduler(c: Cluster, give_up: float = 60.0) -> Fault:
    """SIGSTOP the lease holder, wait for a standby to take the lease over, SIGCONT it, and
    check that it stands down and writes nothing more (its name is in the audit trail)."""
    holder = c.read_until(lambda: _lease_holder(c))
    victim = next(s for s in c.schedulers if holder and holder.endswith(f":{s.pid}"))
    t0 = time.time()
    victim.signal_group(signal.SIGSTOP)
    victim.stopped_by_signal = True
    new = None
    while time.time() - t0 < give_up:
        new = _lease_holder(c)
        if new and new != holder:
            break
        time.sleep(0.1)
    took = time.time() - t0
    victim.signal_group(signal.SIGCONT)
    victim.stopped_by_signal = False
    resumed = time.time()
    deadline = resumed + 15
    while "no longer active" not in victim.log_text() and time.time() < deadline:
        time.sleep(0.2)
    stood_down = "no longer active" in victim.log_text()
    time.sleep(2)  # a few of its loops
    late = [e for e in (c.store.events(c.run_id) or []) if e["actor"] == holder and (ts(e["at"]) or 0.0) >= resumed]
    outcome = (
        f"taken over after {took:.1f} s by {new}" if new and new != holder else f"NOT taken over within {give_up:g} s"
    )
    return Fault(
        "scheduler_stop",
        t0,
        resumed,
        f"SIGSTOP {victim.name} ({holder}), the active one; {outcome}; SIGCONT: "
        f"{'it stood down' if stood_down else 'it did NOT stand down'}, "
        f"{len(late)} event(s) written by it after resuming",
    )


# -- running a scenario ---------------------------------------------------------------------------
@dataclass
class Outcome:
    row: Row
    logdir: Path
    highlights: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cleanup: list[str] = field(default_factory=list)


def run_scenario(
    sc: ScenarioDef, pg: PgCluster, workdir: Path, deadline: float, seed: int, say: Callable[[str], None]
) -> Outcome:
    t_begin = time.time()
    c = Cluster(sc.name, workdir / sc.name, pg, sc.broker, redis_persistent=sc.redis_persistent)
    faults: list[Fault] = []
    note = ""
    row: Row | None = None
    highlights: dict[str, list[dict[str, Any]]] = {}
    try:
        c.start()
        first = [c.start_scheduler(), c.start_worker(), c.start_worker()]
        c.wait_ready(first)
        if sc.standby:
            c.wait_ready([c.start_scheduler()])
        t_trigger = time.time()
        c.seed = seed
        run_id = c.run_id = c.trigger(seed=seed)
        say(f"  run {run_id} triggered; deadline {deadline:g} s")
        end_at = t_trigger + deadline
        last_fault = t_trigger
        mark_reached: float | None = None
        ended_at: float | None = None
        while time.time() < end_at:
            steps = c.steps(run_id)
            run = c.run(run_id) if steps is not None else None
            if run is not None and run["state"] in RUN_TERMINAL:
                if ended_at is None:
                    ended_at = time.time()
                    say(f"  run {run['state']} after {ended_at - t_trigger:.1f} s")
                if time.time() - ended_at >= SETTLE_SECONDS:
                    break
            elif steps is not None and len(faults) < len(sc.plan):
                plan = sc.plan[len(faults)]
                frac = sum(s["state"] in TERMINAL for s in steps) / max(1, len(steps))
                if frac >= plan.at and mark_reached is None:
                    mark_reached = time.time()
                attempts = c.attempts(run_id) or []
                has_running = bool(_running_on_workers(c, attempts)) or not plan.needs_running
                why = None
                if mark_reached is not None and (has_running or time.time() - mark_reached > 15):
                    why = f"{frac:.0%} of steps ended"
                elif time.time() - last_fault > FAULT_FALLBACK_SECONDS:
                    why = f"timer: {FAULT_FALLBACK_SECONDS:g} s since the last fault, {frac:.0%} of steps ended"
                if why:
                    before = c.steps(run_id) or steps
                    read_at = time.time()
                    fault = inject(c, plan)
                    fault.trigger = f"{why}; steps read {fault.start - read_at:.2f} s before the fault"
                    after = c.read_until(lambda: c.steps(run_id)) or []
                    fault.in_flight = sorted(set(in_flight_steps(before)) | set(in_flight_steps(after)))
                    fault.pending_after = pending_steps(after)
                    faults.append(fault)
                    say(
                        f"  fault {len(faults)}/{len(sc.plan)} at +{fault.start - t_trigger:.1f} s ({why}): "
                        f"{fault.detail}"
                    )
                    last_fault, mark_reached = time.time(), None
                    continue
            time.sleep(POLL_SECONDS)
        else:
            say(f"  deadline reached ({deadline:g} s)")
            note = "deadline reached before the run ended"
        # measure before anything is stopped
        run = c.read_until(lambda: c.run(run_id))
        steps = c.read_until(lambda: c.steps(run_id)) or []
        attempts = c.read_until(lambda: c.attempts(run_id)) or []
        text = c.exec_log.read_text() if c.exec_log.exists() else ""
        executions, bad = parse_exec_log(text)
        if bad:
            note = (note + "; " if note else "") + f"{bad} malformed execution-log line(s)"
        for f in faults:
            if f.victim_pid:
                f.victim_hit, verdict = victim_outcome(f, executions)
                f.detail += "; " + verdict
        # recovery counts from the fault's start: an outage's own length is not the engine's
        outage = max((f.end - f.start for f in faults if f.kind == "pg_crash"), default=0.0)
        row = compute_row(
            sc.name,
            sc.broker,
            run,
            steps,
            attempts,
            executions,
            faults,
            faults_planned=len(sc.plan),
            run_id=run_id,
            wall_seconds=0.0,
            note=note,
            target_recovery=TARGET_RECOVERY_SECONDS + outage,
        )
    finally:
        cleanup = c.close()
        for d in c.daemons:
            highlights[d.name] = log_highlights(d.log_text())
    row.wall_seconds = time.time() - t_begin
    return Outcome(row, c.dir, highlights, cleanup)


# -- CLI --------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("flowkit", "celery", "kombu", "redis", "sqlalchemy", "psycopg"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "?"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated scenario names (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--deadline", type=float, default=240.0, help="seconds per scenario from trigger (240)")
    p.add_argument("--json", dest="json_path", help="also write the results here")
    p.add_argument("--keep-logs", action="store_true", help="keep daemon logs and execution logs")
    p.add_argument("--seed", type=int, default=7, help="seed of the steps' sleep times (7)")
    p.add_argument("--soak", type=float, metavar="MINUTES", help="run the soak mode instead of the scenarios")
    args = p.parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:<26} {s.broker:<6} {s.what}")
        return 0
    selected = SCENARIOS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(unknown)}; see --list")
        selected = [BY_NAME[n] for n in names]

    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="flowkit-faults-"))
    started = datetime.now(UTC)
    t0 = time.time()

    def say(msg: str) -> None:
        print(msg, flush=True)

    pg: PgCluster | None = None
    outcomes: list[Outcome] = []
    soak: dict[str, Any] | None = None
    errors: list[str] = []
    keep = args.keep_logs
    try:
        pg = PgCluster()
        pg.init()
        pg.start()
        say(f"fault suite: workdir {workdir}, PostgreSQL port {pg.port}, deadline {args.deadline:g} s")
        if args.soak:
            from bench.faults_soak import run_soak

            soak = run_soak(args.soak, pg, workdir, args.deadline, args.seed, say)
        else:
            for sc in selected:
                say(f"[{sc.name}] {sc.what}")
                try:
                    out = run_scenario(sc, pg, workdir, args.deadline, args.seed, say)
                except (InfraError, subprocess.TimeoutExpired) as exc:
                    errors.append(f"{sc.name}: {exc}")
                    say(f"  harness error: {exc}")
                    keep = True
                    continue
                outcomes.append(out)
                r = out.row
                say(
                    f"  => {r.run_state}, lost {r.steps_lost}, dup {r.dup_after_success}, discarded "
                    f"{r.bodies_discarded}, failed "
                    f"{r.failed_by_fault}, recovery {fmt_recovery(r)} "
                    f"({'ok' if r.ok else 'MISS ' + ','.join(r.misses)}; {r.wall_seconds:.0f} s)"
                )
                if not pg.running:  # a scenario left it stopped: bring it back for the next
                    pg.start()
    except (KeyboardInterrupt, Interrupted) as exc:
        errors.append(f"interrupted: {exc!r}")
        keep = True
    finally:
        if pg is not None:
            pg.destroy()

    total = time.time() - t0
    rows = [o.row for o in outcomes]
    result: dict[str, Any] = {
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": round(total, 1),
        "commit": _git_commit(),
        "host": {"cores": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(),
        "deadline_s": args.deadline,
        "seed": args.seed,
        "targets": {
            "steps_lost": 0,
            "dup_after_success": 0,
            "failed_by_fault": 0,
            "recovery_s_max": 60,
            "bodies_discarded (faults that kill no step body)": 0,
        },
        "flowkit_settings": "defaults, except FLOWKIT_DATABASE_URL, FLOWKIT_BROKER_URL, FLOWKIT_DAGS_FOLDER, "
        "FLOWKIT_DEFAULT_QUEUE, FLOWKIT_EVENTS_QUEUE",
        "errors": errors,
    }
    if soak is not None:
        result["soak"] = soak
        print(json.dumps(soak, indent=2))
    else:
        result["rows"] = [o.row.to_dict() | {"log_highlights": o.highlights, "cleanup": o.cleanup} for o in outcomes]
        print()
        print(format_table(rows))
        print(
            f"\n{len(rows)} scenario(s) in {total / 60:.1f} min; "
            f"{sum(not r.ok for r in rows)} missed a target; {len(errors)} harness error(s)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    paths = [RESULTS / f"faults-{stamp}.json"] + ([Path(args.json_path)] if args.json_path else [])
    for path in paths:
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results: {', '.join(str(p) for p in paths)}")
    if keep:
        print(f"logs kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        return 2
    if soak is not None:
        return 0 if soak["steps_lost"] == 0 and soak["duplicated_successful_attempts"] == 0 else 1
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
