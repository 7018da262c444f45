"""Flows for the claim, finish and cancel races on PostgreSQL (tests/integration/test_pg_race.py).

Every step appends ``start <run> <step> <attempt> <pid> <epoch>`` to the ``log`` param's file
when its body starts (one ``os.write`` on an O_APPEND descriptor: lines of concurrent
processes never interleave), then sleeps ``seconds``.
"""

import os
import time

from flowkit import Flow

WIDTH = 60


def body(ctx):
    path = ctx.params["log"]
    if path:
        line = f"start {ctx.run_id} {ctx.step} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    time.sleep(ctx.params["seconds"])
    return {"step": ctx.step}


chain3 = (
    Flow("chain3", params={"log": "", "seconds": 0.0})
    .step("a", body)
    .step("b", body, after="a")
    .step("c", body, after="b")
)

fanout = Flow("fanout", params={"log": "", "seconds": 0.05})
fanout.step("root", body)
for i in range(WIDTH):
    fanout.step(f"m{i:02d}", body, after="root")
fanout.step("join", body, after=[f"m{i:02d}" for i in range(WIDTH)])
