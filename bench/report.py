"""Markdown tables and the JSON file of a bench run."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

#: Targets of the layered shape (the engine issue's acceptance figures).
CPU_GROWTH_TARGET = 1.3  # scheduler CPU per 1k steps at 10k / at 1k
RSS_TARGET_MB = 300.0  # scheduler peak RSS at 10k steps


def markdown(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    return "\n".join(lines)


def num(value: Any, fmt: str = ".3f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{fmt}}{suffix}"


def status_text(result: dict[str, Any]) -> str:
    status = result["status"]
    if status == "ok":
        return "ok"
    if status == "timed out":
        done = result.get("steps_done_at_timeout")
        extra = f" ({done} of {result['steps']} steps done)" if done is not None else ""
        return f"timed out after {num(result.get('timeout_s'), 'g')} s{extra}"
    if status == "not supported":
        return "not supported by this build"
    return "failed (see below)"


# -- the tables ---------------------------------------------------------------------------------
def ratio_table(results: list[dict[str, Any]]) -> str:
    """One row per shape (and raw baseline): flowkit / raw Celery, measured in the same run."""
    headers = [
        "shape",
        "steps",
        "raw celery median s",
        "flowkit median s",
        "ratio",
        "flowkit overhead ms/step",
        "ratio (timestamps)",
        "status",
    ]
    body = []
    for r in results:
        if r["kind"] in ("chain", "fanout", "map") and r.get("rows"):
            for row in r["rows"]:
                body.append(
                    [
                        row["row"],
                        str(row["steps"]),
                        num(row["raw_median_s"]),
                        num(row["flowkit_median_s"]),
                        num(row["ratio"], ".1f", "x"),
                        num(row["overhead_ms_per_step"], ".1f"),
                        num(row["ratio_exact"], ".1f", "x"),
                        status_text(r),
                    ]
                )
        elif r["kind"] == "layered" and r.get("raw_group_wall_s") and r.get("wall_s"):
            raw, fk = r["raw_group_wall_s"], r["wall_s"]
            body.append(
                [
                    f"{r['shape']} (raw: plain group)",
                    str(r["steps"]),
                    num(raw),
                    num(fk),
                    num(fk / raw, ".1f", "x"),
                    num((fk - raw) / r["steps"] * 1000, ".1f"),
                    "-",
                    status_text(r),
                ]
            )
        else:
            note = "no raw side" if r["kind"] == "limits" and r["status"] == "ok" else status_text(r)
            raw = r.get("raw_group_wall_s")
            body.append([r["shape"], str(r.get("steps", "-")), num(raw), "-", "-", "-", "-", note])
    return markdown(headers, body)


def hop_table(results: list[dict[str, Any]]) -> str:
    """Per-hop latency of the chain shapes (hop = end of step i+1 - end of step i)."""
    headers = ["shape", "hops", "flowkit p50 ms", "flowkit p90 ms", "raw p50 ms", "raw p90 ms", "ratio of p50s"]
    body = []
    for r in results:
        h = r.get("hops")
        if not h:
            continue
        fk, raw = h["flowkit"], h.get("raw", {})
        body.append(
            [
                r["shape"],
                str(fk["count"]),
                num(fk["p50_ms"], ".2f"),
                num(fk["p90_ms"], ".2f"),
                num(raw.get("p50_ms"), ".2f"),
                num(raw.get("p90_ms"), ".2f"),
                num(h.get("ratio_p50"), ".1f", "x"),
            ]
        )
    return markdown(headers, body) if body else ""


def segment_lines(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        segs = r.get("flowkit_segments_ms")
        if segs:
            out.append(f"{r['shape']}: " + ", ".join(f"{k} {v:.2f}" for k, v in segs.items()))
    return out


def cpu_lines(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        c = r.get("cpu")
        if not c or "flowkit_worker_ms_per_step" not in c:
            continue
        out.append(
            f"{r['shape']}: raw worker {num(c.get('raw_worker_ms_per_step'), '.1f')} ms; flowkit worker "
            f"{num(c.get('flowkit_worker_ms_per_step'), '.1f')} ms + scheduler "
            f"{num(c.get('flowkit_scheduler_ms_per_step'), '.1f')} ms"
        )
    return out


def layered_table(results: list[dict[str, Any]]) -> str:
    headers = [
        "shape",
        "runs",
        "steps",
        "edges",
        "wall s",
        "scheduler CPU s",
        "scheduler CPU s / 1k steps",
        "worker CPU ms / step",
        "scheduler RSS MB: before run, peak",
        "raw group s",
        "status",
    ]
    body = []
    for r in results:
        if r["kind"] != "layered":
            continue
        runs = len(r.get("runs", []))
        body.append(
            [
                r["shape"],
                str(runs),
                str(r["steps"]),
                str(r["edges"]),
                num(r.get("wall_s"), ".1f"),
                num(r.get("scheduler_cpu_s"), ".1f"),
                num(r.get("scheduler_cpu_s_per_1k_steps"), ".2f"),
                num(r.get("worker_cpu_ms_per_step"), ".1f"),
                f"{num(r.get('scheduler_rss_before_mb'), '.0f')}, {num(r.get('scheduler_peak_rss_mb'), '.0f')}",
                num(r.get("raw_group_wall_s"), ".1f"),
                status_text(r),
            ]
        )
    return markdown(headers, body) if body else ""


def layered_headline(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Scheduler CPU per 1k steps at the larger size over the smaller one, and the larger's RSS."""
    layered = sorted((r for r in results if r["kind"] == "layered"), key=lambda r: r["steps"])
    if len(layered) < 2:
        return None
    small, large = layered[0], layered[-1]
    a, b = small.get("scheduler_cpu_s_per_1k_steps"), large.get("scheduler_cpu_s_per_1k_steps")
    growth = round(b / a, 2) if a and b else None
    rss = large.get("scheduler_peak_rss_mb")
    partial = any(r["status"] != "ok" for r in (small, large))
    return {
        "small": small["shape"],
        "large": large["shape"],
        "cpu_per_1k_growth": growth,
        "cpu_growth_target": CPU_GROWTH_TARGET,
        "cpu_growth_ok": None if growth is None else growth <= CPU_GROWTH_TARGET,
        "large_scheduler_peak_rss_mb": rss,
        "rss_target_mb": RSS_TARGET_MB,
        "rss_ok": None if rss is None else rss < RSS_TARGET_MB,
        "partial": partial,
    }


def headline_lines(h: dict[str, Any]) -> list[str]:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("meets target" if ok else "MISSES target")

    partial = " (partial: a run timed out; figures per step finished before the timeout)" if h["partial"] else ""
    return [
        f"scheduler CPU per 1k steps, {h['large']} / {h['small']}: {num(h['cpu_per_1k_growth'], '.2f', 'x')} "
        f"(target <= {h['cpu_growth_target']}x: {verdict(h['cpu_growth_ok'])}){partial}",
        f"scheduler peak RSS at {h['large']}: {num(h['large_scheduler_peak_rss_mb'], '.0f', ' MB')} "
        f"(target < {h['rss_target_mb']:.0f} MB: {verdict(h['rss_ok'])})",
    ]


def limits_lines(results: list[dict[str, Any]]) -> list[str]:
    r = next((x for x in results if x["kind"] == "limits"), None)
    if r is None:
        return []
    s = r["settings"]
    head = (
        f"limits: {r['runs']} concurrent runs of {r['flow']} ({r['steps']} steps), "
        f"worker -c {s['worker_concurrency']}, FLOWKIT_MAX_IN_FLIGHT={s['max_in_flight']}, watermarks "
        f"{s['queue_high_watermark']}/{s['queue_low_watermark']}, pool {s['pool']}={s['pool_slots']}"
    )
    if r["status"] == "not supported":
        return [head, f"not supported by this build: {r['detail']}"]
    if "observed" not in r:
        return [head, f"{status_text(r)}: {r.get('detail', '')}"]
    o, checks = r["observed"], r["checks"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "EXCEEDED"

    body = [
        [
            "running steps (all runs)",
            str(s["max_in_flight"]),
            str(o["running"]),
            mark(checks["running <= max_in_flight"]),
        ],
        [
            f"pool {s['pool']} (slots in use)",
            str(s["pool_slots"]),
            str(o["pool_slots"]),
            mark(checks["pool slots <= pool size"]),
        ],
        ["lock warehouse (holders)", "1", str(o["lock_holders"]), mark(checks["lock holders <= 1"])],
        [
            f"queue depth ({o['queue_depth_samples']} samples)",
            f"{s['queue_high_watermark']} (high watermark)",
            str(o["queue_depth_max"]),
            mark(checks["queue depth <= high watermark"]),
        ],
        ["in flight, queued or running (info)", str(s["max_in_flight"]), str(o["in_flight"]), "-"],
    ]
    wall = f"wall {r['wall_s']} s" if r.get("wall_s") else status_text(r)
    return [
        head,
        f"{wall}; run states {r.get('run_states')}",
        markdown(["limit", "configured", "max observed", "check"], body),
    ]


# -- JSON -----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import celery
    import kombu
    import sqlalchemy

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def json_ready(value: Any) -> Any:
    """NaN (a median of nothing) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(payload), indent=2) + "\n")
