"""Low- and high-priority steps that become ready at once (tests/integration/test_priority.py)."""

import time

from flowkit import Flow


def noop(ctx):
    time.sleep(0.02)
    return ctx.step


flow = Flow("prio")
flow.step("root", noop, queue="setup")  # run by a worker that serves only "setup"
for i in range(12):
    flow.step(f"low{i:02d}", noop, after="root", priority=0)
for i in range(12):
    flow.step(f"high{i:02d}", noop, after="root", priority=9)
