"""Notifications: the outbox row written with each notifiable audit event (SQLite and
PostgreSQL, ``backend_store``), its delivery under a lease, retries with backoff, and the
notifiers (callable, log, webhook with HMAC). No real waiting: times are passed in."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowkit.notify.notifiers import (
    SIGNATURE_HEADER,
    CallableNotifier,
    LogNotifier,
    NotificationFailed,
    WebhookNotifier,
)
from flowkit.notify.outbox import notification_kind
from flowkit.notify.sender import DeliveryPolicy, claim_due, deliver_once, list_notifications

from ..store_backends import inline_harness

ROOT = Path(__file__).resolve().parents[2]
SAGA_DAGS = str(ROOT / "tests" / "dags" / "saga")
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def kinds(store: Any) -> list[tuple[str, str | None]]:
    return sorted((n["kind"], n["step"]) for n in list_notifications(store))


# -- the outbox is written with the audit event ----------------------------------------------


def test_failed_run_writes_run_failed_and_retries_exhausted(backend_store):
    # Given a flow whose step fails (no retries)
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("saga_nothing")
    # When it runs to its end
    assert h.run_until_done(run_id) == "failed"
    # Then the outbox holds one row for the step's last failure and one for the run
    assert kinds(backend_store) == [("retries_exhausted", "only"), ("run_failed", None)]
    assert {n["run_id"] for n in list_notifications(backend_store)} == {run_id}


def test_successful_run_writes_no_notification(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    assert h.run_until_done(h.trigger("saga_ok")) == "success"
    assert list_notifications(backend_store) == []


def test_approval_waiting_writes_a_notification(backend_store):
    h = inline_harness(backend_store, SAGA_DAGS)
    run_id = h.trigger("approve_me")
    h.work()
    assert kinds(backend_store) == [("approval_waiting", "sign_off")]
    assert list_notifications(backend_store, run_id=run_id)[0]["run_id"] == run_id


@pytest.mark.parametrize("action", ["sla_at_risk", "sla_missed", "backfill_done"])
def test_plain_audit_actions_write_a_notification(backend_store, action):
    # Given another feature's audit event about a flow
    with backend_store.tx("scheduler") as tx:
        tx.event(action, flow="orders", reason="why it matters")
    # Then it is in the outbox, in the same commit
    [note] = list_notifications(backend_store)
    assert (note["kind"], note["flow_name"], note["reason"]) == (action, "orders", "why it matters")


def test_a_rolled_back_transaction_leaves_no_notification(backend_store):
    with pytest.raises(RuntimeError), backend_store.tx("scheduler") as tx:
        tx.event("sla_missed", flow="orders")
        tx.flush()
        raise RuntimeError("the change did not happen")
    assert list_notifications(backend_store) == []


def test_only_the_meaningful_transitions_are_notifiable():
    assert notification_kind({"action": "run_state", "new_state": "failed", "old_state": "running"}) == "run_failed"
    assert notification_kind({"action": "run_state", "new_state": "success", "old_state": "running"}) is None
    step_fail = {"action": "step_state", "new_state": "failed", "old_state": "running"}
    assert notification_kind(step_fail) == "retries_exhausted"
    # an operator's mark from a non-running state is not an exhausted retry
    assert notification_kind({"action": "step_state", "new_state": "failed", "old_state": "success"}) is None
    assert notification_kind({"action": "step_state", "new_state": "up_for_retry", "old_state": "running"}) is None
    assert notification_kind({"action": "attempt_finished"}) is None


def test_the_pg_fast_path_makes_no_notifiable_move():
    # The fast path writes its audit rows itself, not through Tx.flush: it must only make
    # moves that raise no notification (claims and successes), or it would skip the outbox.
    from flowkit.store import pg_fast

    moves = [m for sql in pg_fast.statements().values() for m in pg_fast.transition_literals(sql)]
    assert moves
    for table, old, new in moves:
        action = {"runs": "run_state", "step_runs": "step_state"}.get(table, table.removeprefix("events:"))
        assert notification_kind({"action": action, "old_state": old, "new_state": new}) is None, (table, old, new)
        assert new not in ("failed", "awaiting_approval"), (table, old, new)


# -- delivery ------------------------------------------------------------------------------


def _one_notification(store: Any) -> None:
    with store.tx("scheduler", now=T0) as tx:
        tx.event("sla_missed", flow="orders", reason="late")


def test_delivery_calls_the_notifier_once_and_records_the_attempt(backend_store):
    _one_notification(backend_store)
    got: list[dict[str, Any]] = []
    notifier = CallableNotifier(got.append)
    assert deliver_once(backend_store, lambda n: [notifier], "s1", now=T0) == 1
    assert [(n["kind"], n["flow"], n["reason"]) for n in got] == [("sla_missed", "orders", "late")]
    # a second pass finds nothing to do: delivered once
    assert deliver_once(backend_store, lambda n: [notifier], "s1", now=T0 + timedelta(hours=1)) == 0
    [note] = list_notifications(backend_store)
    assert note["outcome"] == "delivered" and note["attempts"] == 1
    assert [(a["notifier"], a["ok"], a["number"]) for a in note["delivery_attempts"]] == [("callable", 1, 1)]


def test_failures_retry_with_exponential_backoff_then_give_up(backend_store):
    _one_notification(backend_store)
    policy = DeliveryPolicy(base_delay=timedelta(seconds=2), max_attempts=3)
    calls: list[datetime] = []

    def refuse(note: dict[str, Any]) -> None:
        raise NotificationFailed("HTTP 500")

    notifier = CallableNotifier(refuse)
    now = T0
    for _ in range(20):
        if deliver_once(backend_store, lambda n: [notifier], "s1", now=now, policy=policy):
            calls.append(now)
        now += timedelta(seconds=1)
    # attempts at 0 s, then after 2 s, then after 4 s more; then it gave up
    assert [(c - T0).total_seconds() for c in calls] == [0, 2, 6]
    [note] = list_notifications(backend_store)
    assert note["outcome"] == "gave_up"
    assert [(a["ok"], a["detail"]) for a in note["delivery_attempts"]] == [(0, "HTTP 500")] * 3


def test_two_senders_never_claim_the_same_row(backend_store):
    _one_notification(backend_store)
    policy = DeliveryPolicy()
    first = claim_due(backend_store, "s1", T0, policy)
    second = claim_due(backend_store, "s2", T0, policy)
    assert len(first) == 1 and second == []
    # a sender that died: its lease expires and another one delivers (at least once)
    later = T0 + policy.lease + timedelta(seconds=1)
    assert [r["id"] for r in claim_due(backend_store, "s2", later, policy)] == [first[0]["id"]]


# -- notifiers -------------------------------------------------------------------------------


class FakePost:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.requests.append((url, body, headers, timeout))
        return self.statuses.pop(0)


def test_webhook_posts_json_signed_with_the_secret(monkeypatch):
    monkeypatch.setenv("FLOWKIT_SECRET_HOOK_KEY", "s3cret")
    post = FakePost([200])
    hook = WebhookNotifier("http://127.0.0.1:9/hook", timeout=3, secret="hook_key", post=post)
    hook({"kind": "run_failed", "run_id": "r1"})
    [(url, body, headers, timeout)] = post.requests
    assert (url, timeout, json.loads(body)) == ("http://127.0.0.1:9/hook", 3, {"kind": "run_failed", "run_id": "r1"})
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    assert headers["Content-Type"] == "application/json"


def test_webhook_without_secret_sends_no_signature_and_fails_on_5xx():
    post = FakePost([500])
    hook = WebhookNotifier("http://127.0.0.1:9/hook", post=post)
    with pytest.raises(NotificationFailed, match="answered HTTP 500"):
        hook({"kind": "run_failed"})
    assert SIGNATURE_HEADER not in post.requests[0][2]


def test_webhook_500_then_200_is_delivered_on_the_retry(backend_store):
    _one_notification(backend_store)
    post = FakePost([500, 200])
    hook = WebhookNotifier("http://127.0.0.1:9/hook", post=post)
    policy = DeliveryPolicy(base_delay=timedelta(seconds=2))
    assert deliver_once(backend_store, lambda n: [hook], "s1", now=T0, policy=policy) == 1
    assert deliver_once(backend_store, lambda n: [hook], "s1", now=T0 + timedelta(seconds=1), policy=policy) == 0
    assert deliver_once(backend_store, lambda n: [hook], "s1", now=T0 + timedelta(seconds=2), policy=policy) == 1
    [note] = list_notifications(backend_store)
    assert note["outcome"] == "delivered"
    assert [a["ok"] for a in note["delivery_attempts"]] == [0, 1]


def test_log_notifier_writes_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="flowkit.notify"):
        LogNotifier()({"kind": "run_failed", "flow": "orders", "run_id": "r1", "step": None, "reason": "boom"})
    assert caplog.messages == ["run_failed: orders run r1: boom"]


# -- the CLI -------------------------------------------------------------------------------


def test_cli_lists_notifications_with_their_attempts(sqlite_store):
    from click.testing import CliRunner

    from flowkit.cli import main

    _one_notification(sqlite_store)
    hook = WebhookNotifier("http://127.0.0.1:9/hook", post=FakePost([500]))
    deliver_once(sqlite_store, lambda n: [hook], "s1", now=T0)
    result = CliRunner().invoke(
        main, ["--database-url", sqlite_store.url, "--broker-url", "memory://", "notifications", "list"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "#1 2026-12-05 12:00:00 sla_missed flow orders [retrying, 1 attempt(s)]",
        "    attempt 1 12:00:00 webhook: failed: webhook http://127.0.0.1:9/hook answered HTTP 500",
    ]
