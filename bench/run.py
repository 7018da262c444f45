"""Benchmark flowkit against raw Celery doing the same work, on the same broker, in the same run.

    python bench/run.py [--broker redis|amqp] [--store sqlite|postgres] [--shapes a,b,...]
                        [--quick] [--repeat 3] [--repeat-big 1] [--timeout [SHAPE=]SECONDS ...]
                        [--json out.json] [--no-chord] [--no-raw-group] [--keep-logs]

Shapes (``--shapes``, default all): chain20, fanout40, fanout500, fanout2000, chain200,
layered1k, layered10k (``layered`` = both), limits. Each runs on an environment of its
own (store, queues, daemons; see bench/harness.py) that is stopped and deleted when the
shape ends, also on failure, timeout and SIGTERM. The figure that matters is the RATIO
flowkit / raw Celery; absolute seconds depend on the machine. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as a script (python bench/run.py): make `import bench.*` work
    sys.path.insert(0, _ROOT)

from bench import report  # noqa: E402
from bench.harness import ROOT, Bench  # noqa: E402
from bench.limits_plan import MAX_IN_FLIGHT, QUEUE_HIGH_WATERMARK, QUEUE_LOW_WATERMARK  # noqa: E402
from bench.shapes import ALIASES, SHAPES, ShapeRun, measure, resolve  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def parse_timeouts(values: list[str]) -> dict[str, float]:
    """``--timeout 120`` (every shape) and ``--timeout layered10k=300`` (one shape or alias)."""
    out: dict[str, float] = {}
    for value in values:
        name, _, seconds = value.rpartition("=")
        try:
            limit = float(seconds)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--timeout {value!r}: give SECONDS or SHAPE=SECONDS") from None
        for shape in ALIASES.get(name, [name]) if name else list(SHAPES):
            if shape not in SHAPES:
                raise argparse.ArgumentTypeError(f"--timeout {value!r}: unknown shape {shape!r}")
            out[shape] = limit
    return out


def parse_watermarks(value: str) -> tuple[int, int]:
    try:
        high, low = (int(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--queue-watermarks takes HIGH,LOW, e.g. 20,10") from None
    if not 0 <= low < high:
        raise argparse.ArgumentTypeError("--queue-watermarks: LOW must be below HIGH")
    return high, low


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--shapes", default="all", help=f"comma-separated: {', '.join([*SHAPES, *ALIASES])}")
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (for CI)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side of the smaller shapes (median)")
    parser.add_argument("--repeat-big", type=int, default=1, help="timed runs per side of fanout2000 and layered10k")
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        metavar="[SHAPE=]SECONDS",
        help="seconds one measured run may take; repeatable (defaults: see README)",
    )
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    parser.add_argument(
        "--no-results-file", action="store_true", help="do not write bench/results/<UTC time>-<broker>-<store>.json"
    )
    parser.add_argument("--no-chord", action="store_true", help="skip fanout40's raw chord baseline")
    parser.add_argument("--no-raw-group", action="store_true", help="skip the raw group next to layered")
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT, help="limits: FLOWKIT_MAX_IN_FLIGHT")
    parser.add_argument(
        "--queue-watermarks",
        type=parse_watermarks,
        metavar="HIGH,LOW",
        default=(QUEUE_HIGH_WATERMARK, QUEUE_LOW_WATERMARK),
        help="limits: FLOWKIT_QUEUE_HIGH_WATERMARK,FLOWKIT_QUEUE_LOW_WATERMARK",
    )
    parser.add_argument("--limits-runs", type=int, default=None, help="limits: concurrent runs (default 20, quick 3)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemons' logs")
    args = parser.parse_args(argv)
    try:
        args.shape_list = resolve(args.shapes)
        args.timeouts = parse_timeouts(args.timeout)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    if args.quick:
        args.repeat = args.repeat_big = 1
    if args.repeat < 1 or args.repeat_big < 1:
        parser.error("--repeat and --repeat-big must be at least 1")
    return args


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def print_report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    elapsed: float,
    headline: dict[str, Any] | None,
    commit: str | None,
) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nflowkit vs raw Celery: broker {args.broker}, store {args.store}, "
        f"{'quick, ' if args.quick else ''}repeats {args.repeat} (big shapes {args.repeat_big}), {when}, "
        f"flowkit {commit}, total {elapsed:.0f} s\n"
    )
    print(report.ratio_table(results))
    hops = report.hop_table(results)
    if hops:
        print(
            "\nchain hops (hop = end of step i+1 - end of step i; flowkit from the store's ended_at, "
            "raw from each link's recorded end):"
        )
        print(hops)
    segments = report.segment_lines(results)
    if segments:
        print(
            "\nflowkit chain hop segments (median ms: submit -> first dispatch, finish -> next dispatch, "
            "dispatch -> claim, claim -> finish, last finish -> run success):"
        )
        print("\n".join(f"  {line}" for line in segments))
    cpu = report.cpu_lines(results)
    if cpu:
        print("\nCPU per step during the timed runs (daemons only; servers not counted):")
        print("\n".join(f"  {line}" for line in cpu))
    layered = report.layered_table(results)
    if layered:
        print("\nlayered DAG (scheduler CPU and RSS of the scheduler process group / process):")
        print(layered)
        if headline:
            print("\n".join(report.headline_lines(headline)))
    limits = report.limits_lines(results)
    if limits:
        print()
        print("\n".join(limits))
    for r in results:
        if r["status"] in ("failed", "timed out") and r.get("detail"):
            print(f"\n{r['shape']} {r['status']}: {r['detail']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_signal(signum: int, _frame: Any) -> None:
        # Only the first signal interrupts: a second one must not cut the cleanup short (it is
        # bounded, about 15 s per daemon); SIGKILL still ends the bench at once.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: everything is stopped

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    commit = git_commit()  # at the start: the code that runs, whatever happens to the tree meanwhile
    workdir = Path(tempfile.mkdtemp(prefix="flowkit-bench-"))
    bench = Bench(args.broker, args.store, workdir)
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        for shape in args.shape_list:
            run = ShapeRun(
                shape=shape,
                size=shape.quick if args.quick else shape.full,
                timeout=args.timeouts.get(shape.name, shape.timeout),
                repeats=args.repeat_big if shape.big else args.repeat,
                options=args,
            )
            print(
                f"{shape.name}: {shape.about} (size {run.size}, timeout {run.timeout:g} s) ...",
                file=sys.stderr,
                flush=True,
            )
            t0, load_before = time.perf_counter(), os.getloadavg()[0]
            result = measure(bench, run)
            result["elapsed_s"] = round(time.perf_counter() - t0, 1)
            # The machine is shared: the 1-minute load average around a shape says how noisy it was.
            result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            print(
                f"{shape.name}: {report.status_text(result)} in {result['elapsed_s']:.0f} s "
                f"(load average {result['loadavg_1m'][0]:.1f} -> {result['loadavg_1m'][1]:.1f})",
                file=sys.stderr,
            )
            results.append(result)
    except BaseException:
        interrupted = True
        raise
    finally:
        bench.cleanup()
        if interrupted or bench.problems or args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started

    headline = report.layered_headline(results)
    print_report(args, results, elapsed, headline, commit)
    payload = {
        "date_utc": started_at.isoformat(timespec="seconds"),
        "flowkit_commit": commit,
        "machine": report.machine(),
        "broker": args.broker,
        "store": args.store,
        "quick": args.quick,
        "repeat": args.repeat,
        "repeat_big": args.repeat_big,
        "elapsed_s": round(elapsed, 1),
        "shapes": results,
        "layered_headline": headline,
    }
    paths = (
        []
        if args.no_results_file
        else [RESULTS / f"{started_at:%Y%m%dT%H%M%SZ}-{args.broker}-{args.store}{'-quick' if args.quick else ''}.json"]
    )
    if args.json_path:
        paths.append(Path(args.json_path))
    for path in paths:
        report.write_json(path, payload)
        print(f"results written to {path}", file=sys.stderr)
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
