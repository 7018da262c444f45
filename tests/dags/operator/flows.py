"""Flows for the operator actions (tests/unit/test_operator_actions.py and
tests/integration/test_operator_actions.py).

``gate`` reads the file named by its ``flag`` param: it fails until the file says "go", so
a test can fix the failure and retry the run. ``hold`` sleeps ``seconds`` in pool "one"
(1 slot), appending ``start``/``end`` lines with its pid to the ``log`` param's file.
``self_cancel`` cancels its own run from inside the step (a worker that finishes, or is
interrupted, after the cancel), through the store named by its ``store`` param.
"""

import os
import time

from flowkit import Flow


def noop(ctx):
    return {"step": ctx.step}


def gate(ctx):
    flag = ctx.params["flag"]
    text = open(flag).read().strip() if flag and os.path.exists(flag) else ""
    if text != "go":
        raise RuntimeError(f"flag file {flag} says {text!r}, not 'go'")
    return {"gate": "open"}


def fail(ctx):
    raise RuntimeError("broken on purpose")


def hold(ctx):
    log = ctx.params["log"]
    if log:
        with open(log, "a") as fh:
            fh.write(f"start {ctx.step} {os.getpid()} {time.time():.6f}\n")
    time.sleep(ctx.params["seconds"])
    if log:
        with open(log, "a") as fh:
            fh.write(f"end {ctx.step} {os.getpid()} {time.time():.6f}\n")
    return {"pid": os.getpid()}


def self_cancel(ctx):
    from flowkit.store.sql import SqlStore

    store = SqlStore(ctx.params["store"])
    store.cancel_run(ctx.run_id, by="inside", reason="cancelled while the step ran")
    store.dispose()
    if ctx.params["interrupt"]:
        raise SystemExit(-15)  # what billiard raises in a pool child on SIGTERM
    return {"finished": "after the cancel"}


# extract -> gate -> load -> report; report runs whatever happened (all_done)
gated = (
    Flow("gated", params={"flag": "", "day": "2026-11-23"})
    .step("extract", noop)
    .step("gate", gate, after="extract")
    .step("load", noop, after="gate")
    .step("publish", noop, after="load")
    .step("report", noop, after="publish", trigger="all_done")
)

# a failing step, its dependant, and a step beside them
broken = (
    Flow("broken")
    .step("first", noop)
    .step("bad", fail, after="first")
    .step("after_bad", noop, after="bad")
    .step("beside", noop, after="first")
)

# a long step holding the single slot of pool "one"
held = Flow("held", params={"seconds": 0.0, "log": ""}).step("hold", hold, pool="one")

# one run at a time
single = Flow("single", max_active_runs=1, params={"seconds": 0.0, "log": ""}).step("hold", hold)

# a retrying step (3 attempts) for retry budgets
flaky = Flow("flaky", params={"flag": ""}).step("gate", gate, retries=2, retry_backoff="1s")

inside = (
    Flow("inside", params={"store": "", "interrupt": False})
    .step("first", noop)
    .step("cancel_me", self_cancel, after="first")
    .step("never", noop, after="cancel_me")
)

# a join that its first upstream's success already starts (one_success), then the second ends
early_join = Flow("early_join").step("a", noop).step("b", noop).step("x", noop, after=["a", "b"], trigger="one_success")


def upstream_seen(ctx):
    """What the step got from its direct upstreams (None where one has no result)."""
    return {name: ctx.upstream[name] for name in sorted(ctx.upstream)}


def reads_bad(ctx):
    return {"bad": ctx.upstream["bad"]}


# bad fails; uses reads its result; after_all (all_done) sees every upstream that did not skip
handoff = (
    Flow("handoff")
    .step("first", noop)
    .step("bad", fail, after="first")
    .step("uses", reads_bad, after="bad")
    .step("after_all", upstream_seen, after=["bad", "first"], trigger="all_done")
)
