"""Flows for the pictures of maps, approvals, shell steps and compensation (tests/unit/test_render_model.py)."""

from flowkit import Flow, Param


def make(ctx):
    return {"made": ctx.step}


def undo(ctx):
    return {"undid": ctx.compensates}


def undo_broken(ctx):
    raise RuntimeError("refund API down")


def numbers(ctx):
    return list(range(ctx.params["n"]))


def square(ctx):
    if ctx.index == ctx.params["bad"]:
        raise ValueError(f"element {ctx.index} is bad (token {ctx.params['token']})")
    return ctx.item * ctx.item


_PARAMS = {
    "n": Param(int, default=4),
    "bad": Param(int, default=-1),
    "token": Param(str, default="hunter2-secret", secret=True),
}

# prepare -> numbers -> square[i] -> sign_off (approval) -> publish (shell, fails: the run
# compensates prepare and numbers, last first)
pipeline = (
    Flow("pictured", params=_PARAMS)
    .step("prepare", make, compensate=undo)
    .step("numbers", numbers, after="prepare", compensate=undo_broken)
    .map("square", square, over="numbers", max_parallel=2)
    .approval("sign_off", after="square", timeout="1h")
    .shell(
        "publish",
        'echo "publishing <all> & more"; echo "key=$KEY"; exit 3',
        after="sign_off",
        env={"KEY": "hunter2-secret"},
    )
)

# a map of many elements, worked only in part by the test
big = (
    Flow("big_map", params=_PARAMS)
    .step("numbers", numbers)
    .map("square", square, over="numbers", max_parallel=5)
    .step("total", make, after="square")
)
