"""One long step that logs each execution, for the worker-kill test, and a timeout."""

import os
import time
from pathlib import Path

from flowkit import Flow, Param


def long(ctx):
    with open(ctx.params["log"], "a") as fh:
        fh.write(f"start {ctx.attempt} {os.getpid()}\n")
    Path(ctx.params["started"]).write_text(str(os.getpid()))
    time.sleep(ctx.params["seconds"])
    with open(ctx.params["log"], "a") as fh:
        fh.write(f"end {ctx.attempt} {os.getpid()}\n")
    return {"slept": ctx.params["seconds"], "pid": os.getpid()}


def done(ctx):
    return {"after": ctx.upstream["long"]["pid"]}


def sleepy(ctx):
    time.sleep(30)


slow = (
    Flow("slow", params={"log": Param(str), "started": Param(str), "seconds": 4.0})
    .step("long", long, timeout="60s")
    .then("done", done)
)

timeout = Flow("timeout").step("sleepy", sleepy, timeout="1s")


def stubborn(ctx):
    """Ignores the soft time limit, so the worker's hard limit has to kill it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.2)
        except BaseException:  # swallows SoftTimeLimitExceeded
            pass


hard_timeout = Flow("hard_timeout").step("stubborn", stubborn, timeout="1s").then("after", done)
