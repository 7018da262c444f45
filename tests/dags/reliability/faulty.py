"""Steps that misbehave the ways workers meet in production (tests/unit/test_reliability.py)."""

import os

from flowkit import Flow, Param


class BrokenStr(Exception):
    def __str__(self):
        raise ValueError("__str__ is broken too")


def stopped_once(ctx):
    """Interrupted the first time it runs (as billiard's SIGTERM handler does), fine after."""
    marker = ctx.params["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise SystemExit(-241)
    return {"attempt": ctx.attempt}


def nul_message(ctx):
    raise RuntimeError("bad byte \x00 in the message")


def broken_str(ctx):
    raise BrokenStr()


def quits(ctx):
    raise SystemExit(3)


interrupted = Flow("interrupted", params={"marker": Param(str)}).step("work", stopped_once)
nul = Flow("nul").step("boom", nul_message)
unprintable = Flow("unprintable").step("boom", broken_str)
exits = Flow("exits").step("bye", quits)
