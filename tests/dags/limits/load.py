"""Fan-outs whose steps use a pool, a lock, a flow's step cap and a flow's run cap.

Step names say what a step holds: ``p*`` a slot of pool "db", ``x*`` the "warehouse"
lock (exclusive), ``s*`` the same lock shared, ``n*`` nothing of its own. Each execution
appends ``start``/``end`` lines (wall clock, pid) to the ``log`` param's file when given.
"""

import os
import time

from flowkit import Flow

#: Seconds a step sleeps, by the letter its name starts with, times the run's ``scale``;
#: ``start`` and ``end`` sleep 0.05 s whatever the scale.
PAUSES = {"p": 0.15, "x": 0.1, "s": 0.15, "n": 0.05}


def mark(ctx, what):
    if ctx.params["log"]:
        with open(ctx.params["log"], "a") as fh:  # O_APPEND: one whole line per write
            fh.write(f"{what} {ctx.run_id} {ctx.step} {ctx.attempt} {os.getpid()} {time.time():.6f}\n")


def work(ctx):
    mark(ctx, "start")
    if ctx.step in ("start", "end"):
        time.sleep(0.05)
    else:
        time.sleep(PAUSES[ctx.step[0]] * ctx.params["scale"])
    mark(ctx, "end")
    return {"pid": os.getpid()}


def fan_out(flow, pool=0, exclusive=0, shared=0, plain=0):
    """start -> the steps asked for, side by side -> end."""
    flow.step("start", work)
    names = []
    for prefix, count, options in (
        ("p", pool, {"pool": "db"}),
        ("x", exclusive, {"lock": "warehouse"}),
        ("s", shared, {"lock": ("warehouse", "shared")}),
        ("n", plain, {}),
    ):
        for i in range(1, count + 1):
            names.append(f"{prefix}{i}")
            flow.step(names[-1], work, after="start", **options)
    flow.step("end", work, after=names)
    return flow


PARAMS = {"scale": 1.0, "log": ""}

# At most 3 steps of this flow queued or running at once.
lim_steps = fan_out(Flow("lim_steps", params=PARAMS, max_active_steps=3), pool=4, exclusive=2, plain=6)
# One run of this flow at a time.
lim_single = fan_out(Flow("lim_single", params=PARAMS, max_active_runs=1), pool=3, exclusive=1, plain=4)
# No cap of its own: only the pool, the lock and the global cap hold it back.
lim_wide = fan_out(Flow("lim_wide", params=PARAMS), pool=6, exclusive=2, plain=6)
# Shared holders beside exclusive ones of the same lock.
lim_lock = fan_out(Flow("lim_lock", params=PARAMS), shared=6, exclusive=3)
# Long pool and lock steps, for killing a worker or the scheduler while they hold slots.
lim_hold = fan_out(Flow("lim_hold", params=PARAMS), pool=6, exclusive=2, plain=2)
