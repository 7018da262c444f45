"""Flows for the compensation (saga) and approval tests."""

from flowkit import Flow


def make(ctx):
    return {"made": ctx.step}


def boom(ctx):
    raise RuntimeError("payment provider down")


def undo(ctx):
    """Undo a step: return what it had made (its result comes in ctx.upstream)."""
    return {"undid": ctx.compensates, "result": ctx.result_of(ctx.compensates)}


def undo_broken(ctx):
    raise RuntimeError("cannot release the hold")


def undo_flaky(ctx):
    if ctx.attempt == 1:
        raise RuntimeError("refund API timed out")
    return {"undid": ctx.compensates, "attempt": ctx.attempt}


def _order(name: str, fail: bool) -> Flow:
    # reserve -> charge -> ship, reserve -> notify, charge -> audit (no compensation)
    return (
        Flow(name)
        .step("reserve", make, compensate=undo)
        .step("charge", make, after="reserve", compensate=undo)
        .step("notify", make, after="reserve", compensate=undo)
        .step("audit", make, after="charge")
        .step("ship", boom if fail else make, after="charge", compensate=undo)
    )


saga_fail = _order("saga_fail", fail=True)
saga_ok = _order("saga_ok", fail=False)

saga_comp_fails = (
    Flow("saga_comp_fails")
    .step("first", make, compensate=undo)
    .then("second", make, compensate=undo_broken)
    .then("third", boom)
)

saga_comp_retries = (
    Flow("saga_comp_retries")
    .step("refundable", make, compensate=undo_flaky, retries=1, retry_backoff=0.01)
    .then("explode", boom)
)

approve_me = (
    Flow("approve_me")
    .step("prepare", make, compensate=undo)
    .approval("sign_off", after="prepare")
    .step("publish", make, after="sign_off")
)

approve_times_out = (
    Flow("approve_times_out")
    .step("prepare", make, compensate=undo)
    .approval("sign_off", after="prepare", timeout="10s")
    .step("publish", make, after="sign_off")
)

approve_times_out_yes = (
    Flow("approve_times_out_yes").approval("sign_off", timeout=5, on_timeout="approve").then("publish", make)
)

saga_nothing = Flow("saga_nothing").step("only", boom, compensate=undo)

saga_pool = Flow("saga_pool").step("booked", make, pool="rooms", lock="calendar", compensate=undo).then("explode", boom)

approve_quick_timeout = (
    Flow("approve_quick_timeout")
    .step("prepare", make)
    .approval("sign_off", after="prepare", timeout="2s", on_timeout="approve")
    .step("publish", make, after="sign_off")
)


def ship_when_flagged(ctx):
    """Fails until the file named by the flag param says "go" (a cause an operator fixes)."""
    import os

    flag = ctx.params["flag"]
    text = open(flag).read().strip() if flag and os.path.exists(flag) else ""
    if text != "go":
        raise RuntimeError(f"flag file {flag} says {text!r}, not 'go'")
    return {"made": ctx.step}


# reserve -> charge -> ship (fails until fixed), reserve -> notify, charge -> audit (no compensation)
saga_retry = (
    Flow("saga_retry", params={"flag": ""})
    .step("reserve", make, compensate=undo)
    .step("charge", make, after="reserve", compensate=undo)
    .step("notify", make, after="reserve", compensate=undo)
    .step("audit", make, after="charge")
    .step("ship", ship_when_flagged, after="charge", compensate=undo)
)

# first -> second (its compensation always fails) -> third (fails until fixed)
saga_retry_comp_fails = (
    Flow("saga_retry_comp_fails", params={"flag": ""})
    .step("first", make, compensate=undo)
    .then("second", make, compensate=undo_broken)
    .then("third", ship_when_flagged)
)

# a shell step and a step with success_when=, both undone by a function, then a failure
saga_shell = (
    Flow("saga_shell")
    .shell("touch", "true", compensate=undo)
    .step("checked", make, after="touch", compensate=undo, success_when=lambda r: r["made"] == "checked")
    .then("explode", boom)
)
