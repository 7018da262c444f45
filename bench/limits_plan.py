"""The plan of the ``limits`` shape, shared by its flow and by the check in ``bench/run.py``.

Plain data and no flowkit import: the bench reads it to know which steps were bound by
which limit even when the flow itself cannot be defined (an engine without pools and
locks rejects the flow module, and the bench then reports the shape as unsupported).

Shape of the flow: ``start``, then ``width`` parallel steps, then ``end``. Every step
sleeps ``STEP_SECONDS``. Every 4th parallel step takes one slot of the ``db`` pool and
every 10th (offset 3) holds the exclusive ``warehouse`` lock; the two sets do not overlap.
"""

from __future__ import annotations

POOL = "db"
POOL_SLOTS = 3
LOCK = "warehouse"
STEP_SECONDS = 0.02

#: Flow name -> number of parallel steps (the flow has two more: start and end).
FLOWS = {"bench_limits": 98, "bench_limits_quick": 18}

#: Engine settings the shape runs the scheduler and worker with (flags can override them).
MAX_IN_FLIGHT = 8
QUEUE_HIGH_WATERMARK = 20
QUEUE_LOW_WATERMARK = 10


def parallel_step(index: int) -> str:
    return f"w{index:03d}"


def step_limits(index: int) -> dict[str, object]:
    """The limit options (``Flow.step`` keyword arguments) of parallel step ``index``."""
    if index % 4 == 0:
        return {"pool": POOL, "slots": 1}
    if index % 10 == 3:
        return {"lock": LOCK}
    return {}


def limits_by_step(width: int) -> dict[str, dict[str, object]]:
    """Step name -> its limit options, for the steps that have any."""
    out = {}
    for i in range(width):
        options = step_limits(i)
        if options:
            out[parallel_step(i)] = options
    return out
