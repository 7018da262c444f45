"""Flows for the fault-injection suite (``python -m bench.faults``).

``faultflow``: 299 steps: a root, a 60-wide fan-out, a 60-wide mesh (each step after two of
the fan-out), a join, another 60-wide fan-out, 60 two-step chains, a 56-wide mesh and a
final join. Every step sleeps a seeded random 20-100 ms (the same duration on every
execution of that step) and appends ONE line per execution to the execution log:

    run_id <TAB> step <TAB> attempt <TAB> pid <TAB> start <TAB> end

(``start``/``end`` are ``time.time()``), written by a single ``os.write`` on an
``O_APPEND`` descriptor, so lines from concurrent processes never interleave. The line is
written when the body returns: an execution killed in the middle leaves no line.

``fault_chain`` (20 sequential steps) and ``fault_fanout`` (root, 30, join) use the same
body; the soak mode mixes all three.

The log path is the ``log`` param, or the ``FAULT_EXEC_LOG`` environment variable of the
worker when the param is empty. Nothing here ever fails on purpose.
"""

import os
import random
import time

from flowkit import Flow, Param

WIDTH = 60


def body(ctx):
    start = time.time()
    # bench/faults_metrics.body_seconds has the same formula: the harness aims faults at
    # bodies with time left
    seconds = random.Random(f"{ctx.params['seed']}:{ctx.step}").uniform(0.02, 0.10)
    time.sleep(seconds)
    end = time.time()
    path = ctx.params.get("log") or os.environ.get("FAULT_EXEC_LOG", "")
    if path:
        line = f"{ctx.run_id}\t{ctx.step}\t{ctx.attempt}\t{os.getpid()}\t{start:.6f}\t{end:.6f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return {"step": ctx.step, "slept_ms": round(seconds * 1000, 1)}


def _params():
    return {"log": Param(str, default=""), "seed": Param(int, default=7)}


def _name(prefix, i):
    return f"{prefix}_{i:02d}"


flow = Flow("faultflow", params=_params(), description="fault-injection suite: 299 steps")
flow.step("root", body)
for i in range(WIDTH):
    flow.step(_name("a", i), body, after="root")
for i in range(WIDTH):
    flow.step(_name("b", i), body, after=[_name("a", i), _name("a", (i + 1) % WIDTH)])
flow.step("join_b", body, after=[_name("b", i) for i in range(WIDTH)])
for i in range(WIDTH):
    flow.step(_name("c", i), body, after="join_b")
for i in range(WIDTH):
    flow.step(_name("d", i), body, after=_name("c", i))
for i in range(56):
    flow.step(_name("e", i), body, after=[_name("d", i), _name("d", (i + 30) % WIDTH)])
flow.step("end", body, after=[_name("e", i) for i in range(56)])

fault_chain = Flow("fault_chain", params=_params(), description="fault-injection soak: 20-step chain")
for i in range(20):
    fault_chain.step(_name("s", i), body, after=_name("s", i - 1) if i else None)

fault_fanout = Flow("fault_fanout", params=_params(), description="fault-injection soak: fan-out of 30")
fault_fanout.step("root", body)
for i in range(30):
    fault_fanout.step(_name("m", i), body, after="root")
fault_fanout.step("join", body, after=[_name("m", i) for i in range(30)])
