"""Flows with callbacks at both levels; every callback appends its context to params["out"]."""

from __future__ import annotations

import json

from flowkit import CallbackContext, Flow, Param, StepContext


def record(ctx: CallbackContext) -> None:
    entry = {
        "flow": ctx.flow,
        "run_id": ctx.run_id,
        "step": ctx.step,
        "kind": ctx.kind,
        "state": ctx.state,
        "attempt": ctx.attempt,
        "error": ctx.error,
    }
    with open(ctx.params["out"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def explode(ctx: CallbackContext) -> None:
    record(ctx)
    raise RuntimeError(f"{ctx.kind} callback exploded")


def ok(ctx: StepContext) -> int:
    return ctx.attempt


def flaky(ctx: StepContext) -> int:
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt


def broken(ctx: StepContext) -> None:
    raise ValueError("always fails")


PARAMS = {"out": Param(str)}

cb_ok = (
    Flow("cb_ok", params=PARAMS, on_success=record, on_failure=record)
    .step("a", ok, on_success=record)
    .step("b", flaky, after="a", retries=1, retry_backoff=0.2, on_retry=record, on_success=record)
)

cb_fail = (
    Flow("cb_fail", params=PARAMS, on_success=record, on_failure=record, on_retry=record)
    .step("a", broken, retries=1, retry_backoff=0.2, on_retry=record, on_failure=record)
    .step("c", ok, after="a", on_failure=record)
)

cb_raise = (
    Flow("cb_raise", params=PARAMS, on_success=explode).step("a", ok, on_success=explode).step("b", ok, after="a")
)

# No pool of that name exists: the scheduler fails the step when it tries to grant it.
cb_pool = Flow("cb_pool", params=PARAMS, on_failure=record).step("a", ok, pool="cb_missing_pool", on_failure=record)


def three(ctx: StepContext) -> list[int]:
    return [1, 2, 3]


def double(ctx: StepContext) -> int:
    if ctx.item == 2 and ctx.attempt < 2:
        raise RuntimeError("the instance of 2 fails once")
    return int(ctx.item) * 2


def refund(ctx: StepContext) -> None:
    return None


# A map step's on_success/on_failure are about the map step (once), its on_retry about an
# instance; a compensation step does not fire the callbacks of the step it undoes.
cb_map = (
    Flow("cb_map", params=PARAMS)
    .step("numbers", three)
    .map(
        "doubled",
        double,
        over="numbers",
        retries=1,
        retry_backoff=0.2,
        on_success=record,
        on_failure=record,
        on_retry=record,
    )
)

cb_saga = (
    Flow("cb_saga", params=PARAMS)
    .step("charge", ok, compensate=refund, on_success=record, on_failure=record)
    .step("ship", broken, after="charge")
)
