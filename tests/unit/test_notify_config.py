"""A flow's notify= list: checked when the flow is defined, kept in its spec, and routed by
the scheduler's sender to the notifiers that take each kind (on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowkit import DefinitionError, Flow
from flowkit.notify import Log, Webhook
from flowkit.notify.config import build_notifiers
from flowkit.notify.notifiers import LogNotifier, WebhookNotifier
from flowkit.notify.sender import deliver_once, list_notifications, routing_from_specs
from flowkit.spec import FlowSpec

from ..store_backends import inline_harness

NOTIFY_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "notify")


def noop(ctx: Any) -> None:
    return None


# -- checked at definition ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "says"),
    [
        (["https://x"], "notify= takes Webhook(...), Log(...) or Call(fn)"),
        ([Webhook("ftp://x/y")], "is not an http(s) URL"),
        ([Webhook("https://x", timeout="soon")], "Webhook timeout='soon'"),
        ([Webhook("https://x", timeout=0)], "must be positive"),
        ([Webhook("https://x", secret=3)], "names a flowkit secret"),
        ([Log(on="run_failled")], "pick kinds from run_failed, retries_exhausted"),
        ([Log(on=[])], "pick kinds from"),
    ],
)
def test_a_wrong_notify_entry_is_one_line_naming_the_flow(notify: Any, says: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Flow("bad_notify", notify=notify)
    message = str(caught.value)
    assert says in message
    assert 'flow "bad_notify"' in message
    assert "\n" not in message


def test_notify_is_kept_in_the_spec_as_data() -> None:
    flow = Flow("kept", notify=Webhook("https://hooks.example/x", secret="hook", on=("run_failed", "sla_missed")))
    spec = flow.step("a", noop).spec()
    again = FlowSpec.from_json(spec.to_json())
    assert again.notify == (
        {
            "type": "webhook",
            "url": "https://hooks.example/x",
            "secret": "hook",
            "timeout": 10.0,
            "on": ["run_failed", "sla_missed"],
        },
    )


def test_notifiers_are_built_only_for_the_kinds_they_take() -> None:
    entries = [
        {"type": "webhook", "url": "https://h/x", "secret": None, "timeout": 3.0, "on": ["run_failed"]},
        {"type": "log", "on": ["run_failed", "sla_at_risk"]},
    ]
    failed = build_notifiers(entries, "run_failed")
    assert [type(n) for n in failed] == [WebhookNotifier, LogNotifier]
    assert isinstance(failed[0], WebhookNotifier) and failed[0].timeout == 3.0
    assert [type(n) for n in build_notifiers(entries, "sla_at_risk")] == [LogNotifier]
    assert build_notifiers(entries, "approval_waiting") == []


# -- routed by the flow's spec -----------------------------------------------------------


def test_the_sender_routes_each_kind_to_the_flows_notifiers(backend_store, caplog) -> None:
    # Given a failing flow that sends run_failed to a webhook (where nothing listens) and
    # everything to the log, and one that declares no notifier
    h = inline_harness(backend_store, NOTIFY_DAGS)
    loud = h.trigger("notify_fails")
    quiet = h.trigger("notify_quiet")
    assert h.run_until_done(loud) == "failed"
    assert h.run_until_done(quiet) == "failed"
    # When the sender makes one pass
    with caplog.at_level(logging.WARNING, logger="flowkit.notify"):
        handled = deliver_once(
            backend_store,
            routing_from_specs(backend_store),
            "test-sender",
            now=datetime.now(UTC) + timedelta(seconds=1),
        )
    # Then every notification is handled once: the webhook was tried for the loud run's
    # failure only (refused: due again after the backoff), the log took both of its kinds,
    # and the quiet flow's were recorded as delivered to no notifier
    assert handled == 4
    logged = sorted(
        r.getMessage().split(":")[0] for r in caplog.records if r.name == "flowkit.notify" and loud in r.getMessage()
    )
    assert logged == ["retries_exhausted", "run_failed"]
    notes = {(n["run_id"], n["kind"]): n for n in list_notifications(backend_store)}
    tried = {key: [(a["notifier"], a["ok"]) for a in n["delivery_attempts"]] for key, n in notes.items()}
    assert tried[(loud, "run_failed")] == [("webhook", 0), ("log", 1)]
    assert "refused" in notes[(loud, "run_failed")]["delivery_attempts"][0]["detail"].lower()
    assert notes[(loud, "run_failed")]["outcome"] is None  # due again after the backoff
    assert tried[(loud, "retries_exhausted")] == [("log", 1)]
    assert notes[(loud, "retries_exhausted")]["outcome"] == "delivered"
    assert tried[(quiet, "run_failed")] == []
    assert notes[(quiet, "run_failed")]["outcome"] == "delivered"
