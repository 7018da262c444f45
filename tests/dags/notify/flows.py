"""Flows with notifiers, for the notify= tests. The webhook points at the discard port,
where nothing listens: its delivery fails and is retried; the log's succeeds."""

from flowkit import Flow
from flowkit.notify import Call, Log, Webhook


def boom(ctx):
    raise RuntimeError("warehouse API down")


HOOK = "http://127.0.0.1:9/hook"

notify_fails = Flow(
    "notify_fails",
    notify=[Webhook(HOOK, on="run_failed", timeout="5s"), Log()],
).step("only", boom)

notify_quiet = Flow("notify_quiet").step("only", boom)


def note_to_file(note):
    """A callable notifier: appends the notification to $FLOWKIT_TEST_NOTES (one JSON line)."""
    import json
    import os

    with open(os.environ["FLOWKIT_TEST_NOTES"], "a") as out:
        out.write(json.dumps({"kind": note["kind"], "run_id": note["run_id"], "flow": note["flow"]}) + "\n")


def missed_only(note):
    note_to_file({**note, "kind": "only:" + note["kind"]})


notify_calls = Flow(
    "notify_calls",
    notify=[note_to_file, Call(missed_only, on="sla_missed")],
).step("only", boom)
