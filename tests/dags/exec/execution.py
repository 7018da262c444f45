"""Flows for the tests of how a step executes: shell steps, success_when, Refs, timeouts.

Shell commands that must leave a trace for the test read EXEC_TEST_DIR from the worker's
environment (the tests set it)."""

import time

import flowkit
from flowkit import Flow, Ref


def rows(ctx):
    return {"rows": ctx.params["rows"]}


def broken_check(result):
    raise KeyError("no such field")


def produce(ctx):
    return Ref("s3://lake/orders/2026-11-23.parquet", rows=120, format="parquet")


def produce_nested(ctx):
    return {"parts": [Ref("file:///tmp/a.csv"), Ref("file:///tmp/b.csv", rows=2)], "total": 2}


def consume(ctx):
    ref = ctx.upstream["produce"]
    parts = ctx.upstream["produce_nested"]["parts"]
    assert isinstance(ref, flowkit.Ref), type(ref)
    assert all(isinstance(p, flowkit.Ref) for p in parts), parts
    return {"uri": ref.uri, "rows": ref["rows"], "parts": [p.uri for p in parts]}


def sleeps(ctx):
    time.sleep(4)  # one blocking call: only a signal (or giving up on it) ends it early
    return {"slept": 4}


def blocks(ctx):
    time.sleep(1.5)  # in a worker thread nothing can interrupt this
    return {"slept": 1.5}


def naps(ctx):
    for _ in range(400):  # Python bytecode between short sleeps
        time.sleep(0.01)
    return {"napped": 4}


def swallows(ctx):
    try:
        time.sleep(4)
    except Exception:
        pass  # catches StepTimedOut and returns as if nothing happened
    return {"ok": True}


def quick(ctx):
    return {"quick": True}


shell_ok = (
    Flow("shell_ok")
    .shell("hello", 'echo "hello $GREETING"; echo "from $(pwd)" >&2', env={"GREETING": "world"}, cwd="/")
    .step("after", lambda ctx: ctx.upstream["hello"], after="hello")
)
shell_exit = Flow("shell_exit").shell("bad", "echo about to fail; exit 3", retries=1, retry_backoff=0.01)
shell_codes = Flow("shell_codes").shell("warns", "echo partial; exit 3", success_codes=(0, 3))
shell_fail_on = Flow("shell_fail_on").shell(
    "grep", "echo starting; echo 'ERROR: disk full'; echo done; exit 0", fail_on=[r"^FATAL", r"^ERROR\b"]
)
shell_output = Flow("shell_output").shell(
    "chatty", "i=0; while [ $i -lt 3000 ]; do echo line-$i-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; i=$((i+1)); done"
)
shell_timeout = Flow("shell_timeout").shell(
    "sleeper", 'sleep 30 & echo $! > "$EXEC_TEST_DIR/child.pid"; echo started; wait', timeout=1
)
shell_long = Flow("shell_long").shell("waits", 'sleep 30 & echo $! > "$EXEC_TEST_DIR/child.pid"; wait')
shell_leftover = Flow("shell_leftover").shell("forks", 'sleep 30 & echo $! > "$EXEC_TEST_DIR/child.pid"; echo forked')
shell_success_when = Flow("shell_success_when").shell(
    "count", "echo 0 rows", success_when=lambda r: r["last_lines"][-1] != "0 rows"
)

success_when_flow = (
    Flow("success_when", params={"rows": 0})
    .step("count", rows, retries=1, retry_backoff=0.01, success_when=lambda r: r["rows"] > 0)
    .step("after", quick, after="count")
)
success_when_raises = Flow("success_when_raises").step("count", quick, success_when=broken_check)
refs = (
    Flow("refs")
    .step("produce", produce)
    .step("produce_nested", produce_nested)
    .step("consume", consume, after=["produce", "produce_nested"])
)
timeout_sleep = Flow("timeout_sleep").step("sleeps", sleeps, timeout=1).step("after", quick, after="sleeps")
timeout_blocked = Flow("timeout_blocked").step("blocks", blocks, timeout=0.3)
timeout_naps = Flow("timeout_naps").step("naps", naps, timeout=0.3)
timeout_swallowed = Flow("timeout_swallowed").step("swallows", swallows, timeout=0.3)
