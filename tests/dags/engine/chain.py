"""A chain whose steps log every execution to a file: proves nothing runs twice."""

import os
import time
from pathlib import Path

from flowkit import Flow, Param


def _work(ctx):
    Path(ctx.params["log"]).parent.mkdir(parents=True, exist_ok=True)
    with open(ctx.params["log"], "a") as fh:  # O_APPEND: one line per execution
        fh.write(f"{ctx.step} {ctx.attempt} {os.getpid()}\n")
    time.sleep(ctx.params["pause"])
    previous = sum(v["n"] for v in ctx.upstream.values())
    return {"step": ctx.step, "n": previous + 1}


flow = Flow("chain", params={"log": Param(str), "pause": 0.0, "fail_at": ""})
for i in range(1, 7):
    flow.step(f"s{i}", _work, after=f"s{i - 1}" if i > 1 else None)
