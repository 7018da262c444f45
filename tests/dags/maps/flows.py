"""Flows with map steps (tests/unit/test_map.py, tests/integration/test_map.py)."""

from flowkit import Flow, Param


def numbers(ctx):
    return list(range(ctx.params["n"]))


def square(ctx):
    return ctx.item * ctx.item


def total(ctx):
    squares = ctx.upstream["square"]
    return {"count": len(squares), "sum": sum(squares), "first": squares[:3]}


def nothing(ctx):
    return []


def not_a_list(ctx):
    return {"a": 1}


def flaky(ctx):
    """Instance 2 fails its first two attempts."""
    if ctx.index == 2 and ctx.attempt < 3:
        raise RuntimeError(f"instance {ctx.index} attempt {ctx.attempt} fails on purpose")
    return {"index": ctx.index, "attempt": ctx.attempt}


def always_fails_on_one(ctx):
    if ctx.index == 1:
        raise RuntimeError("element 1 is bad")
    return ctx.item


def noted(ctx):
    return {"item": ctx.item, "index": ctx.index, "config": ctx.upstream.get("config")}


def config(ctx):
    return {"mode": "fast"}


def done(ctx):
    return "done"


def slow_square(ctx):
    import time

    time.sleep(ctx.params["sleep"])
    return ctx.item * ctx.item


squares = (
    Flow("squares", params={"n": Param(int, default=5)})
    .step("numbers", numbers)
    .map("square", square, over="numbers")
    .step("total", total, after="square")
)

empty = (
    Flow("empty")
    .step("numbers", nothing)
    .map("square", square, over="numbers")
    .step("total", total, after="square")
    .step("cleanup", done, after="square", trigger="all_done")
)

wrong_type = Flow("wrong_type").step("numbers", not_a_list).map("square", square, over="numbers")

retried = (
    Flow("retried", params={"n": Param(int, default=4)})
    .step("numbers", numbers)
    .map("flaky", flaky, over="numbers", retries=2, retry_backoff=0.05)
    .step("done", done, after="flaky")
)

one_fails = (
    Flow("one_fails", params={"n": Param(int, default=4)})
    .step("numbers", numbers)
    .map("work", always_fails_on_one, over="numbers")
    .step("after", done, after="work")
    .step("cleanup", done, after="work", trigger="all_done")
)

with_config = (
    Flow("with_config", params={"n": Param(int, default=3)})
    .step("numbers", numbers)
    .step("config", config)
    .map("noted", noted, over="numbers", after="config")
)

capped = (
    Flow("capped_map", params={"n": Param(int, default=12), "sleep": Param(float, default=0.0)})
    .step("numbers", numbers)
    .map("square", slow_square, over="numbers", max_parallel=3)
    .step("total", total, after="square")
)

pooled = (
    Flow("pooled_map", params={"n": Param(int, default=8)})
    .step("numbers", numbers)
    .map("square", square, over="numbers", pool="mpool")
    .step("total", total, after="square")
)


def skips_odd(ctx):
    from flowkit import Skip

    if ctx.index % 2:
        raise Skip("odd elements are not needed")
    return ctx.item


skippy = (
    Flow("skippy")
    .step("numbers", lambda: [10, 11, 12, 13])
    .map("even", skips_odd, over="numbers")
    .step("after", lambda ctx: ctx.upstream["even"], after="even")
)

one_fails_then_reads = (
    Flow("one_fails_then_reads", params={"n": Param(int, default=3)})
    .step("numbers", numbers)
    .map("work", always_fails_on_one, over="numbers")
    .step("after", lambda ctx: {"got": ctx.upstream["work"]}, after="work")
)


def undo_work(ctx):
    """Undo one instance: name it, with its result and element (tests check the order).
    Undoing item `undo_bad` fails."""
    if ctx.item is not None and ctx.item == ctx.params["undo_bad"]:
        raise RuntimeError(f"cannot undo item {ctx.item}")
    return {"undid": ctx.compensates, "result": ctx.result_of(ctx.compensates), "item": ctx.item, "index": ctx.index}


def fails_on_item(ctx):
    if ctx.item == ctx.params["bad"]:
        raise RuntimeError(f"item {ctx.item} is bad")
    return {"did": ctx.item}


def boom(ctx):
    raise RuntimeError("the step after the map fails")


# prepare -> work (a map over [1, 2, 3] with compensate=) -> finish; item `bad` of work
# fails (0: none does), finish fails when `late` is true, undoing item `undo_bad` fails
compensated_map = (
    Flow(
        "compensated_map",
        params={"bad": Param(int, default=3), "late": Param(bool, default=False), "undo_bad": Param(int, default=0)},
    )
    .step("prepare", lambda: [1, 2, 3], compensate=undo_work)
    .map("work", fails_on_item, over="prepare", compensate=undo_work)
    .step("finish", lambda ctx: boom(ctx) if ctx.params["late"] else "done", after="work")
)
