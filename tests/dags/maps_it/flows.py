"""Map steps on real workers (tests/integration/test_map.py). Bodies that take time append
"start|end <step> <attempt> <pid> <time>" lines to the file in param ``log``, so the test can
tell which bodies ran, where, and when."""

import os
import time

from flowkit import Flow, Param


def numbers(ctx):
    return list(range(ctx.params["n"]))


def square(ctx):
    return ctx.item * ctx.item


def total(ctx):
    squares = ctx.upstream["square"]
    return {"count": len(squares), "ordered": squares == [i * i for i in range(len(squares))]}


def _note(ctx, what):
    if ctx.params["log"]:
        with open(ctx.params["log"], "a") as f:
            f.write(f"{what} {ctx.step} {ctx.attempt} {os.getpid()} {time.time():.6f}\n")


def slow_square(ctx):
    _note(ctx, "start")
    time.sleep(ctx.params["sleep"])
    _note(ctx, "end")
    return ctx.item * ctx.item


def flaky(ctx):
    """Instance 1 fails its first two attempts."""
    if ctx.index == 1 and ctx.attempt < 3:
        raise RuntimeError(f"instance {ctx.index} attempt {ctx.attempt} fails on purpose")
    return {"index": ctx.index, "attempt": ctx.attempt}


squares = (
    Flow("it_squares", params={"n": Param(int, default=2000)})
    .step("numbers", numbers)
    .map("square", square, over="numbers")
    .step("total", total, after="square")
)

retried = (
    Flow("it_retried")
    .step("numbers", lambda: [0, 1, 2])
    .map("flaky", flaky, over="numbers", retries=2, retry_backoff=0.1)
)

slow = (
    Flow(
        "it_slow",
        params={"n": Param(int, default=12), "sleep": Param(float, default=0.2), "log": Param(str, default="")},
    )
    .step("numbers", numbers)
    .map("square", slow_square, over="numbers")
    .step("total", total, after="square")
)

capped = (
    Flow(
        "it_capped",
        params={"n": Param(int, default=12), "sleep": Param(float, default=0.2), "log": Param(str, default="")},
    )
    .step("numbers", numbers)
    .map("square", slow_square, over="numbers", max_parallel=3)
    .step("total", total, after="square")
)
