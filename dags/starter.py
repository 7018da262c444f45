"""A starter flow to copy: steps in order with ``after=``, a param, a retry.

    flowkit dev starter                  # greets "world"
    flowkit dev starter -p name=Ada

A step is a function of one argument, its context: ``ctx.params`` holds the run's params and
``ctx.upstream`` the JSON results of the steps it runs after.
"""

from flowkit import Flow, Param, StepContext


def greet(ctx: StepContext) -> str:
    return f"hello, {ctx.params['name']}"


def shout(ctx: StepContext) -> str:
    return ctx.upstream["greet"].upper() + "!"


def count(ctx: StepContext) -> int:
    return len(ctx.upstream["greet"])


def report(ctx: StepContext) -> dict[str, object]:
    ctx.log.info("%s (%s letters)", ctx.upstream["shout"], ctx.upstream["count"])
    return {"message": ctx.upstream["shout"], "letters": ctx.upstream["count"]}


flow = (
    Flow("starter", params={"name": Param(str, default="world")})
    .step("greet", greet)
    .step("shout", shout, after="greet", retries=2, retry_backoff="1s")  # up to 3 attempts
    .step("count", count, after="greet")
    .step("report", report, after=["shout", "count"])  # runs when both have succeeded
)
