"""The sensor bench's flows (bench/sensors.py): a sensor that pokes every second for a file
its run's params name, and a short chain of other work that must keep running beside the
sensors on a worker with two processes."""

from __future__ import annotations

import time
from pathlib import Path

from flowkit import Flow, NotYet, Param


def landed(ctx):
    path = Path(ctx.params["path"])
    return True if path.exists() else NotYet(f"{path} is not there yet")


def work(ctx) -> str:
    time.sleep(float(ctx.params["seconds"]))
    return "worked"


def done() -> str:
    return "done"


sensor = (
    Flow("bench_sensor", params={"path": Param(str)})
    .sensor("landed", poke=landed, every="1s", backoff=1.0, timeout="1h")
    .then("after", done)
)

busy = (
    Flow("bench_busy", params={"seconds": Param(float, default=0.02)})
    .step("one", work)
    .then("two", work)
    .then("three", work)
    .then("four", work)
    .then("five", work)
)
