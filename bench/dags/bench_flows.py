"""Flows for ``bench/run.py``: no-op steps, so the time measured is flowkit's own.

* ``bench_chain``: 20 sequential steps; each returns a tiny dict built from its upstream's.
* ``bench_fanout``: one root, 40 independent steps after it, one join after them all.
* ``bench_chain_quick`` / ``bench_fanout_quick``: the same shapes with 5 steps (``--quick``).

The raw Celery equivalents are in ``bench/raw_celery.py``.
"""

from __future__ import annotations

from flowkit import Flow, StepContext

CHAIN_STEPS = 20
FANOUT_WIDTH = 40
QUICK = 5


def first(ctx: StepContext) -> dict:
    return {"n": 1}


def link(ctx: StepContext) -> dict:
    """Take the upstream step's tiny dict and return the next one."""
    (prev,) = ctx.upstream.values()
    return {"n": prev["n"] + 1}


def join(ctx: StepContext) -> dict:
    return {"n": len(ctx.upstream)}


def chain_flow(name: str, steps: int) -> Flow:
    flow = Flow(name, description=f"{steps} sequential no-op steps (benchmark)").step("s00", first)
    for i in range(1, steps):
        flow.then(f"s{i:02d}", link)
    return flow


def fanout_flow(name: str, width: int) -> Flow:
    flow = Flow(name, description=f"root, {width} parallel no-op steps, join (benchmark)").step("root", first)
    members = [f"m{i:02d}" for i in range(width)]
    for m in members:
        flow.step(m, link, after="root")
    return flow.step("join", join, after=members)


bench_chain = chain_flow("bench_chain", CHAIN_STEPS)
bench_fanout = fanout_flow("bench_fanout", FANOUT_WIDTH)
bench_chain_quick = chain_flow("bench_chain_quick", QUICK)
bench_fanout_quick = fanout_flow("bench_fanout_quick", QUICK)
