"""Flows with notifiers, for the notify= tests. The webhook points at the discard port,
where nothing listens: its delivery fails and is retried; the log's succeeds."""

from flowkit import Flow
from flowkit.notify import Log, Webhook


def boom(ctx):
    raise RuntimeError("warehouse API down")


HOOK = "http://127.0.0.1:9/hook"

notify_fails = Flow(
    "notify_fails",
    notify=[Webhook(HOOK, on="run_failed", timeout="5s"), Log()],
).step("only", boom)

notify_quiet = Flow("notify_quiet").step("only", boom)
