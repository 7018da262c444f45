"""A writer flow whose runs each write one dataset event, and a flow triggered on each one
(tests/integration/test_triggers_daemons.py)."""

from __future__ import annotations

from flowkit import Dataset, Flow


def noop(ctx):  # type: ignore[no-untyped-def]
    return None


writer = Flow("burst_writer").step("write", noop, writes="s3://burst/data")
target = Flow("burst_target", trigger_on=[Dataset("s3://burst/data")]).step("use", noop)
