"""A step that always fails, with retries, and the steps after it."""

from flowkit import Flow, Retry, Skip


def ok(ctx):
    return "fine"


def always_fails(ctx):
    raise RuntimeError(f"disk full on attempt {ctx.attempt}")


def big(ctx):
    return "x" * 300_000


def skipper(ctx):
    raise Skip("nothing to do today")


def asks_retry(ctx):
    if ctx.attempt < 2:
        raise Retry("upstream not ready", delay=0.5)
    return {"attempt": ctx.attempt}


def not_json(ctx):
    return object()


def bad_branch(ctx):
    return "nowhere"


failing = (
    Flow("failing")
    .step("start", ok)
    .step("flaky", always_fails, after="start", retries=2, retry_backoff="1s")
    .step("after_flaky", ok, after="flaky")
    .step("after_after", ok, after="after_flaky")
    .step("independent", ok, after="start")
)

big_result = Flow("big_result").step("huge", big).then("next", ok)

signals = (
    Flow("signals")
    .step("skipper", skipper)
    .step("after_skip", ok, after="skipper")
    .step("cleanup", ok, after="skipper", trigger="all_done")
    .step("asks_retry", asks_retry, retries=1)
)

odd_results = Flow("odd_results").step("not_json", not_json).branch("bad_branch", bad_branch).then("x", ok)
# not_json and bad_branch are independent roots; x follows the branch
