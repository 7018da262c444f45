"""The ``limits`` shape of bench/run.py: steps bound by a pool, a lock and the global caps.

Uses engine options (``pool=``, ``slots=``, ``lock=``) that only some builds of flowkit
have; this folder is loaded only for that shape, so a build without them reports the
shape as unsupported instead of failing every other shape's dags folder.
The plan (which step takes which limit) lives in ``bench/limits_plan.py``.
"""

from __future__ import annotations

import time

from bench.limits_plan import FLOWS, STEP_SECONDS, parallel_step, step_limits
from flowkit import Flow


def work() -> None:
    """About 20 ms of waiting: long enough for concurrency to show, short enough to run 2,000."""
    time.sleep(STEP_SECONDS)


def limits_flow(name: str, width: int) -> Flow:
    flow = Flow(
        name,
        description=f"start, {width} parallel 20 ms steps under a pool, a lock and the global caps, end (benchmark)",
    ).step("start", work)
    steps = [parallel_step(i) for i in range(width)]
    for i, step in enumerate(steps):
        flow.step(step, work, after="start", **step_limits(i))
    return flow.step("end", work, after=steps)


bench_limits = limits_flow("bench_limits", FLOWS["bench_limits"])
bench_limits_quick = limits_flow("bench_limits_quick", FLOWS["bench_limits_quick"])
