"""The benchmark shapes: what each one runs, and the figures it returns.

Every ``measure_*`` function gets a ``ShapeRun`` (the shape, its size for this
invocation, its timeout and repeats) and returns one JSON-ready dict with a ``status``:
``ok``, ``timed out`` (a run exceeded the shape's timeout; the figures measured up to
then are kept) or ``not supported`` (this build of flowkit lacks what the shape needs).
Anything else that stops a shape (a daemon died, a service refused) is recorded as
``failed`` with its message by ``measure``, and the bench goes on with the next shape.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.flows import chain_step, dags_module_source
from bench.harness import (
    ROOT,
    Bench,
    BenchError,
    DagsDoNotLoad,
    RunTimedOut,
    Sample,
    ShapeEnv,
    rss_mb,
    ts,
)

LIMITS_DAGS = ROOT / "bench" / "dags_limits"
#: Runs long enough to time out rather than hang; first runs also wait for the daemons.
WARMUP_TIMEOUT = 120.0
#: The limits shape needs more worker processes than its in-flight cap, or the worker
#: count, not the engine, would be what keeps concurrency under the cap.
LIMITS_WORKER_CONCURRENCY = 10


@dataclass(frozen=True)
class Shape:
    name: str
    kind: str  # chain | fanout | map | layered | limits
    full: Any  # size at full scale (steps, width, (layers, width) or (flow, runs))
    quick: Any  # size with --quick
    timeout: float  # default seconds one measured run may take
    big: bool  # --repeat-big (default 1) repeats, not --repeat; chain/fan-out: no full-size warm-up
    about: str


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in [
        Shape("chain20", "chain", 20, 5, 60, False, "20 sequential steps (the foundation issue's chain)"),
        Shape("fanout40", "fanout", 40, 5, 60, False, "root, 40 parallel steps, join"),
        Shape("fanout500", "fanout", 500, 20, 300, False, "root, 500 parallel steps, join"),
        Shape("fanout2000", "fanout", 2000, 50, 600, True, "root, 2,000 parallel steps, join"),
        Shape("map2000", "map", 2000, 50, 600, True, "root, a map over 2,000 elements, join"),
        Shape("chain200", "chain", 200, 10, 300, False, "200 sequential steps; per-hop p50/p90"),
        # layered1k repeats like the small shapes: a run takes seconds, and its scheduler CPU
        # per step, the denominator of the layered headline, varied by a third between single runs.
        Shape("layered1k", "layered", (10, 100), (3, 10), 300, False, "10 layers x 100 steps, 3 upstreams each"),
        Shape("layered10k", "layered", (100, 100), (10, 10), 300, True, "100 layers x 100 steps, 3 upstreams each"),
        Shape(
            "limits",
            "limits",
            ("bench_limits", 20),
            ("bench_limits_quick", 3),
            300,
            True,
            "concurrent runs under a pool, a lock, an in-flight cap and queue watermarks",
        ),
    ]
}
ALIASES = {"all": list(SHAPES), "layered": ["layered1k", "layered10k"]}


@dataclass
class ShapeRun:
    shape: Shape
    size: Any
    timeout: float
    repeats: int
    options: argparse.Namespace


# -- helpers ---------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def open_env(bench: Bench, name: str, flows: dict[str, str], *, raw: bool, **kw: Any) -> ShapeEnv:
    """A ShapeEnv whose dags folder holds one generated module: ``flows`` plus a warm-up chain."""
    folder = bench.workdir / name / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    flows = {**flows, "bench_warmup": "chain_flow('bench_warmup', 3)"}
    (folder / f"bench_{name}.py").write_text(dags_module_source(flows))
    return ShapeEnv(bench, name, folder, raw=raw, **kw)


def warm_up(env: ShapeEnv) -> None:
    """Wait until the daemons work: a 3-step flowkit chain, a 3-task raw chain."""
    env.flowkit.run("bench_warmup", WARMUP_TIMEOUT)
    if env.raw is not None:
        env.raw.run("chain", 3, WARMUP_TIMEOUT)


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in after if k in before}


def successful_steps(env: ShapeEnv, run_id: str | None) -> int:
    """How many steps of ``run_id`` have succeeded (the progress of a run that timed out)."""
    if run_id is None:
        return 0
    return sum(1 for r in env.flowkit.store.step_runs(run_id) if r["state"] == "success")


def latest_attempts(env: ShapeEnv, run_id: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for a in env.flowkit.store.attempts(run_id):
        if a["step"] not in out or a["number"] > out[a["step"]]["number"]:
            out[a["step"]] = a
    return out


def hops(ends: list[float]) -> list[float]:
    """Seconds between consecutive ends (hop i = end of step i+1 - end of step i)."""
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def hop_stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p90_ms": round(percentile(values, 90) * 1000, 2),
    }


# -- chain and fan-out: flowkit against raw Celery --------------------------------------------
def measure_compare(bench: Bench, run: ShapeRun) -> dict[str, Any]:
    """Time the same shape on both sides, alternating which side goes first per repeat."""
    shape, size, opts = run.shape, run.size, run.options
    if shape.kind == "chain":
        flow_call, steps, raw_size = f"chain_flow('bench_main', {size})", size, size
        # chain200 reports hops on both sides, so its raw links record their end times.
        variants = ["timed_chain"] if shape.name == "chain200" else ["chain"]
    elif shape.kind == "map":  # the same work as fanout: the raw side is the same group
        flow_call, steps, raw_size = f"map_flow('bench_main', {size})", size + 2, size
        variants = ["fanout"]
    else:
        flow_call, steps, raw_size = f"fanout_flow('bench_main', {size})", size + 2, size
        variants = ["fanout"] + (["fanout_chord"] if shape.name == "fanout40" and not opts.no_chord else [])
    result: dict[str, Any] = {
        "shape": shape.name,
        "kind": shape.kind,
        "steps": steps,
        "repeats": run.repeats,
        "timeout_s": run.timeout,
        "status": "ok",
    }
    samples: dict[str, list[Sample]] = {"flowkit": [], **{v: [] for v in variants}}
    env = open_env(bench, shape.name, {"bench_main": flow_call}, raw=True)
    try:
        env.flowkit.prepare()
        env.flowkit.start_daemons()
        assert env.raw is not None
        before: dict[str, float] = {}
        try:
            warm_up(env)
            if not shape.big:  # a full-size run per side, so the timed runs start warm
                for v in variants:
                    env.raw.run(v, raw_size, run.timeout)
                env.flowkit.run("bench_main", run.timeout)
            before = env.cpu()
            for rep in range(run.repeats):
                order = ["raw", "flowkit"] if rep % 2 == 0 else ["flowkit", "raw"]
                for side in order:
                    if side == "raw":
                        for v in variants:
                            samples[v].append(env.raw.run(v, raw_size, run.timeout))
                    else:
                        samples["flowkit"].append(env.flowkit.run("bench_main", run.timeout))
        except RunTimedOut as exc:
            bench.problems = True
            result.update(status="timed out", detail=str(exc))
            run_id = env.flowkit.last_run_id
            if run_id and not any(s.ident == run_id for s in samples["flowkit"]):
                result["steps_done_at_timeout"] = successful_steps(env, run_id)
        after = env.cpu()
        result["rows"] = [
            compare_row(
                shape.name if i == 0 else f"{shape.name} (raw: chord)", v, steps, samples["flowkit"], samples[v]
            )
            for i, v in enumerate(variants)
        ]
        if before and result["status"] == "ok":  # after a timeout, CPU includes the unfinished run
            result["cpu"] = cpu_per_step(cpu_used(before, after), steps, raw_size, samples, variants)
        if shape.kind == "chain" and samples["flowkit"]:
            result["flowkit_segments_ms"] = chain_segments(env, samples["flowkit"], steps)
            fk_hops = [h for s in samples["flowkit"] for h in flowkit_chain_hops(env, s.ident, steps)]
            result["hops"] = {"flowkit": hop_stats(fk_hops)}
            if variants == ["timed_chain"] and samples["timed_chain"]:
                raw_hops = [h for s in samples["timed_chain"] for h in hops(env.raw.chain_ends(s.ident))]
                result["hops"]["raw"] = hop_stats(raw_hops)
                result["hops"]["ratio_p50"] = round(
                    result["hops"]["flowkit"]["p50_ms"] / result["hops"]["raw"]["p50_ms"], 2
                )
    finally:
        env.close()
    return result


def compare_row(label: str, variant: str, steps: int, fk: list[Sample], raw: list[Sample]) -> dict[str, Any]:
    raw_s, fk_s = median([x.wall for x in raw]), median([x.wall for x in fk])
    raw_x, fk_x = median([x.exact for x in raw]), median([x.exact for x in fk])
    return {
        "row": label,
        "raw_variant": variant,
        "steps": steps,
        "raw_median_s": raw_s,
        "flowkit_median_s": fk_s,
        "ratio": fk_s / raw_s,
        "overhead_ms_per_step": (fk_s - raw_s) / steps * 1000,
        "raw_exact_median_s": raw_x,
        "flowkit_exact_median_s": fk_x,
        "ratio_exact": fk_x / raw_x,
        "raw_samples_s": [round(x.wall, 4) for x in raw],
        "flowkit_samples_s": [round(x.wall, 4) for x in fk],
    }


def cpu_per_step(
    used: dict[str, float], steps: int, raw_size: int, samples: dict[str, list[Sample]], variants: list[str]
) -> dict[str, Any]:
    """CPU ms per step of each daemon over the timed runs (servers not counted)."""
    # A raw fan-out runs root + members + join; a raw chain runs its links.
    raw_steps = sum(len(samples[v]) * (raw_size + 2 if v.startswith("fanout") else raw_size) for v in variants)
    fk_steps = len(samples["flowkit"]) * steps
    out: dict[str, Any] = {"cpu_s": used, "raw_steps": raw_steps, "flowkit_steps": fk_steps}
    if raw_steps and "raw-worker" in used:
        out["raw_worker_ms_per_step"] = round(used["raw-worker"] / raw_steps * 1000, 2)
    if fk_steps:
        for name in ("flowkit-worker", "flowkit-scheduler"):
            if name in used:
                out[f"{name.replace('-', '_')}_ms_per_step"] = round(used[name] / fk_steps * 1000, 2)
    return out


def flowkit_chain_hops(env: ShapeEnv, run_id: str, steps: int) -> list[float]:
    atts = latest_attempts(env, run_id)
    return hops([ts(atts[chain_step(i)]["ended_at"]) for i in range(steps)])


def chain_segments(env: ShapeEnv, fk: list[Sample], steps: int) -> dict[str, float]:
    """Median ms of each segment of a flowkit chain hop, from the store's own timestamps."""
    segs: dict[str, list[float]] = {
        "submit -> first dispatch": [],
        "finish -> next dispatch": [],
        "dispatch -> claim": [],
        "claim -> finish": [],
        "last finish -> run success": [],
    }
    order = [chain_step(i) for i in range(steps)]
    for sample in fk:
        run = env.flowkit.store.get_run(sample.ident)
        atts = latest_attempts(env, sample.ident)
        segs["submit -> first dispatch"].append(ts(atts[order[0]]["dispatched_at"]) - ts(run["created_at"]))
        for prev, cur in zip(order, order[1:], strict=False):
            segs["finish -> next dispatch"].append(ts(atts[cur]["dispatched_at"]) - ts(atts[prev]["ended_at"]))
        for name in order:
            a = atts[name]
            segs["dispatch -> claim"].append(ts(a["started_at"]) - ts(a["dispatched_at"]))
            segs["claim -> finish"].append(ts(a["ended_at"]) - ts(a["started_at"]))
        segs["last finish -> run success"].append(ts(run["ended_at"]) - ts(atts[order[-1]]["ended_at"]))
    return {k: round(median(v) * 1000, 2) for k, v in segs.items()}


# -- layered: how the scheduler's cost grows with the run's size ---------------------------------
def measure_layered(bench: Bench, run: ShapeRun) -> dict[str, Any]:
    shape, opts = run.shape, run.options
    layers, width = run.size
    steps = layers * width
    raw_group = not opts.no_raw_group
    result: dict[str, Any] = {
        "shape": shape.name,
        "kind": "layered",
        "steps": steps,
        "layers": layers,
        "width": width,
        "edges": (layers - 1) * width * min(3, width),
        "timeout_s": run.timeout,
        "status": "ok",
    }
    env = open_env(
        bench, shape.name, {"bench_layered": f"layered_flow('bench_layered', {layers}, {width})"}, raw=raw_group
    )
    try:
        started = time.perf_counter()
        env.flowkit.prepare()  # includes loading the generated flow into the store
        result["prepare_s"] = round(time.perf_counter() - started, 2)
        env.flowkit.start_daemons()
        warm_up(env)
        if raw_group and env.raw is not None:
            # The same number of independent tasks through plain Celery: what the hardware and
            # broker allow without any orchestration. Before the flowkit run, so a flowkit run
            # that times out (and keeps its daemons busy) cannot slow it down.
            try:
                result["raw_group_wall_s"] = round(env.raw.run("group", steps, run.timeout).wall, 3)
            except RunTimedOut as exc:
                result["raw_group_wall_s"] = None
                result["raw_group_detail"] = str(exc)
        result["scheduler_rss_before_mb"] = rss_mb(env.flowkit.scheduler.pid, "VmRSS")
        result["runs"] = []
        for _ in range(run.repeats):
            figures = layered_run(env, steps, run.timeout)
            result["runs"].append(figures)
            if figures["status"] != "ok":
                bench.problems = True
                result.update(
                    status=figures["status"], detail=figures["detail"], steps_done_at_timeout=figures["steps_done"]
                )
                break
        # VmHWM: the scheduler's peak since it started (this shape's stack alone).
        result["scheduler_peak_rss_mb"] = rss_mb(env.flowkit.scheduler.pid)
        # Medians over the repeats; a run that timed out contributes its partial figures.
        for key in ("wall_s", "scheduler_cpu_s", "scheduler_cpu_s_per_1k_steps", "worker_cpu_ms_per_step"):
            values = [r[key] for r in result["runs"] if r.get(key) is not None]
            result[key] = round(median(values), 3) if values else None
    finally:
        env.close()
    return result


def layered_run(env: ShapeEnv, steps: int, timeout: float) -> dict[str, Any]:
    """One timed layered run: wall time and the daemons' CPU, per step that finished."""
    before, t0 = env.cpu(), time.perf_counter()
    figures: dict[str, Any] = {"status": "ok", "steps_done": steps}
    try:
        figures["wall_s"] = round(env.flowkit.run("bench_layered", timeout).wall, 3)
    except RunTimedOut as exc:
        figures.update(
            status="timed out",
            detail=str(exc),
            wall_s=None,
            steps_done=successful_steps(env, env.flowkit.last_run_id),
            run_elapsed_s=round(time.perf_counter() - t0, 1),
        )
    used = cpu_used(before, env.cpu())
    done = figures["steps_done"]
    figures["cpu_s"] = used
    figures["scheduler_cpu_s"] = used["flowkit-scheduler"]
    # Per step that finished, so a run stopped at its timeout still gives a (partial) figure.
    if done:
        figures["scheduler_cpu_s_per_1k_steps"] = round(used["flowkit-scheduler"] / done * 1000, 3)
        figures["worker_cpu_ms_per_step"] = round(used["flowkit-worker"] / done * 1000, 2)
    return figures


# -- limits: pools, locks, an in-flight cap and queue watermarks under concurrent runs ------------
class DepthSampler(threading.Thread):
    """Samples a queue's depth every ``interval`` seconds until stopped."""

    def __init__(self, probe: Callable[[], int], interval: float = 0.02) -> None:
        super().__init__(name="bench-queue-depth", daemon=True)
        self.probe = probe
        self.interval = interval
        self.samples: list[int] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(self.probe())
            except Exception:  # a probe hiccup must not end the sampling
                self.errors += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def max_overlap(intervals: list[tuple[float, float, int]]) -> int:
    """The largest sum of weights of intervals (start, end, weight) open at one instant.

    An interval ending at the instant another starts does not overlap it (ends sort first).
    """
    points = [(s, w) for s, _, w in intervals] + [(e, -w) for _, e, w in intervals]
    points.sort(key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def limits_check(attempts: list[dict[str, Any]], limits: dict[str, dict[str, Any]], now: float) -> dict[str, int]:
    """Largest concurrency seen in the attempt rows: overall, in the pool, holding the lock.

    Running = started_at -> ended_at; in flight = dispatched_at -> ended_at (queued or
    running). An attempt still open (the runs timed out) counts as open until ``now``.
    """
    from bench.limits_plan import LOCK, POOL

    running, in_flight, pool, lock = [], [], [], []
    for a in attempts:
        end = ts(a["ended_at"]) if a["ended_at"] is not None else now
        if a["dispatched_at"] is not None:
            in_flight.append((ts(a["dispatched_at"]), end, 1))
        if a["started_at"] is None:
            continue
        span = (ts(a["started_at"]), end)
        running.append((*span, 1))
        opts = limits.get(a["step"], {})
        if opts.get("pool") == POOL:
            pool.append((*span, int(opts.get("slots", 1))))
        if opts.get("lock") == LOCK:
            lock.append((*span, 1))
    return {
        "running": max_overlap(running),
        "in_flight": max_overlap(in_flight),
        "pool_slots": max_overlap(pool),
        "lock_holders": max_overlap(lock),
    }


def measure_limits(bench: Bench, run: ShapeRun) -> dict[str, Any]:
    from bench.limits_plan import FLOWS, POOL, POOL_SLOTS, limits_by_step

    opts = run.options
    flow, runs = run.size
    runs = opts.limits_runs or runs
    high, low = opts.queue_watermarks
    settings = {
        "max_in_flight": opts.max_in_flight,
        "queue_high_watermark": high,
        "queue_low_watermark": low,
        "pool": POOL,
        "pool_slots": POOL_SLOTS,
        "worker_concurrency": LIMITS_WORKER_CONCURRENCY,
    }
    result: dict[str, Any] = {
        "shape": "limits",
        "kind": "limits",
        "flow": flow,
        "runs": runs,
        "steps": runs * (FLOWS[flow] + 2),
        "settings": settings,
        "timeout_s": run.timeout,
        "status": "ok",
    }
    env = ShapeEnv(
        bench,
        "limits",
        LIMITS_DAGS,
        raw=False,
        worker_concurrency=LIMITS_WORKER_CONCURRENCY,
        extra_env={
            "FLOWKIT_MAX_IN_FLIGHT": str(opts.max_in_flight),
            "FLOWKIT_QUEUE_HIGH_WATERMARK": str(high),
            "FLOWKIT_QUEUE_LOW_WATERMARK": str(low),
        },
    )
    probe = None
    try:
        try:
            env.flowkit.prepare(setup=[["pools", "set", POOL, str(POOL_SLOTS)]])
        except DagsDoNotLoad as exc:
            return {**result, "status": "not supported", "detail": f"bench/dags_limits does not load: {exc}"}
        env.flowkit.start_daemons()
        env.flowkit.run("bench_limits_quick", WARMUP_TIMEOUT)  # warm-up; waits for the daemons
        probe = env.flowkit.queue_depth_probe()
        sampler = DepthSampler(probe)
        sampler.start()
        t0 = time.perf_counter()
        run_ids = [env.flowkit.submit(flow) for _ in range(runs)]
        states: dict[str, str] = {}
        deadline = t0 + run.timeout
        try:
            while len(states) < len(run_ids):
                for run_id in run_ids:
                    if run_id not in states and (end := env.flowkit.ended(run_id)):
                        states[run_id] = end[0]
                if time.perf_counter() > deadline:
                    env.flowkit.check()
                    raise RunTimedOut(run.timeout, f"{runs - len(states)} of {runs} runs of {flow}")
                time.sleep(0.1)
            result["wall_s"] = round(time.perf_counter() - t0, 2)
        except RunTimedOut as exc:
            bench.problems = True
            result.update(status="timed out", detail=str(exc))
        finally:
            sampler.stop()
        result["run_states"] = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
        if any(s != "success" for s in states.values()):
            bench.problems = True
        attempts = [a for r in run_ids for a in env.flowkit.store.attempts(r)]
        observed = limits_check(attempts, limits_by_step(FLOWS[flow]), time.time())
        result["observed"] = {
            **observed,
            "queue_depth_max": max(sampler.samples, default=0),
            "queue_depth_samples": len(sampler.samples),
            "probe_errors": sampler.errors,
        }
        result["checks"] = {
            "running <= max_in_flight": observed["running"] <= opts.max_in_flight,
            "pool slots <= pool size": observed["pool_slots"] <= POOL_SLOTS,
            "lock holders <= 1": observed["lock_holders"] <= 1,
            "queue depth <= high watermark": result["observed"]["queue_depth_max"] <= high,
        }
    finally:
        if probe is not None:
            probe.close()
        env.close()
    return result


MEASURE: dict[str, Callable[[Bench, ShapeRun], dict[str, Any]]] = {
    "chain": measure_compare,
    "fanout": measure_compare,
    "map": measure_compare,
    "layered": measure_layered,
    "limits": measure_limits,
}


def measure(bench: Bench, run: ShapeRun) -> dict[str, Any]:
    try:
        return MEASURE[run.shape.kind](bench, run)
    except BenchError as exc:  # RunTimedOut outside a timed run (e.g. a warm-up) included
        bench.problems = True
        return {"shape": run.shape.name, "kind": run.shape.kind, "status": "failed", "detail": str(exc)[:4000]}


def resolve(names: str) -> list[Shape]:
    out: list[str] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        for real in ALIASES.get(name, [name]):
            if real not in SHAPES:
                raise ValueError(f"unknown shape {name!r}; choose from {', '.join([*SHAPES, *ALIASES])}")
            if real not in out:
                out.append(real)
    return [SHAPES[n] for n in out]
