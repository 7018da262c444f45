"""Flows for the per-attempt output tests: a Python step that logs and prints, fails its
first attempt and succeeds its second; a quiet step; a shell step that prints slowly."""

import sys

from flowkit import Flow


def chatty(ctx):
    ctx.log.info("attempt %s starting", ctx.attempt)
    print(f"printed by attempt {ctx.attempt}")
    print(f"to stderr from attempt {ctx.attempt}", file=sys.stderr)
    sys.stdout.write("no newline at the end")
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    ctx.log.warning("attempt %s done", ctx.attempt)
    return {"attempt": ctx.attempt}


def quiet(ctx):
    return 1


logs_retry = (
    Flow("logs_retry").step("chatty", chatty, retries=1, retry_backoff=0.01).step("quiet", quiet, after="chatty")
)

logs_follow = Flow("logs_follow").shell("slow", 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 1; done; echo finished')
