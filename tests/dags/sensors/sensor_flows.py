"""Sensors: a poke that says "not yet" twice and then done, one that times out and is
skipped, one that times out and fails, one whose poke raises once (a retry) and then waits,
and a file sensor whose file is there. Each poke counts its calls in a marker file (the
``marker`` param), so every backend sees the same answers in the same order.

The timeouts are shorter than a poke (it sleeps 20 ms): the first "not yet" is already past
the timeout, whatever the clock, so the trail is the same on every backend.
"""

from __future__ import annotations

import time
from pathlib import Path

from flowkit import Flow, NotYet, Param


def _count(ctx) -> int:
    marker = Path(ctx.params["marker"])
    seen = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(seen))
    return seen


def third_time(ctx):
    seen = _count(ctx)
    if seen < 3:
        return NotYet(f"seen {seen} of 3")
    return {"pokes": seen}


def never(ctx) -> bool:
    _count(ctx)
    time.sleep(0.02)
    return False


def flaky_then_waits(ctx):
    seen = _count(ctx)
    if seen == 1:
        raise ConnectionError("the source did not answer")
    if seen == 2:
        raise NotYet("the source answered: no data yet")
    return True


def use(ctx) -> str:
    return f"used {ctx.upstream}"


def cleanup() -> str:
    return "cleaned"


MARKER = {"marker": Param(str)}

waits = (
    Flow("sensor_waits", params=MARKER)
    .sensor("ready", poke=third_time, every="2s", backoff=2.0, timeout="1h")
    .then("use", use)
)

skips = (
    Flow("sensor_skips", params=MARKER)
    .sensor("never_there", poke=never, every="5ms", timeout="10ms", on_timeout="skip")
    .then("use_it", use)
    .step("cleanup", cleanup, after="never_there", trigger="all_done")
)

fails = (
    Flow("sensor_fails", params=MARKER)
    .sensor("never_there", poke=never, every="5ms", timeout="10ms", retries=2)
    .then("use_it", use)
)

flaky = (
    Flow("sensor_flaky", params=MARKER)
    .sensor("ready", poke=flaky_then_waits, every="1s", backoff=1.0, timeout="1h", retries=1, retry_backoff=3)
    .then("use", use)
)

present = Flow("sensor_file").sensor("landed", file=__file__, every="1m").then("use", use)
