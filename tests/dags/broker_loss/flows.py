"""A step long enough to be running when the test stops the broker, then one after it."""

import os
import time

from flowkit import Flow, Param


def _note(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def slow(ctx):
    # A line when the body starts and one when it ends: a body killed midway writes no end.
    _note(ctx.params["log"], f"start {ctx.step} {ctx.attempt}")
    time.sleep(ctx.params["seconds"])
    _note(ctx.params["log"], f"end {ctx.step} {ctx.attempt}")
    return {"slept": ctx.params["seconds"]}


def after(ctx):
    return ctx.upstream["slow"]


flow = (
    Flow("broker_loss", params={"log": Param(str), "seconds": Param(float, default=4.0)})
    .step("slow", slow)
    .step("after", after, after="slow")
)
