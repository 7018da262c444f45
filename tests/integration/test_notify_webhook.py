"""A webhook notifier against a real HTTP server on loopback (http.server in a thread) that
answers 500 once and then 200: the sender thread retries after its backoff, the body is
signed with HMAC-SHA256, and both attempts are recorded, on PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from flowkit.notify.notifiers import SIGNATURE_HEADER, WebhookNotifier
from flowkit.notify.sender import DeliveryPolicy, NotificationSender, list_notifications
from flowkit.store.sql import SqlStore

from .http_hook import serving


class FlakyHook(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, dict(self.headers)))
        self.send_response(self.statuses.pop(0) if self.statuses else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    FlakyHook.statuses, FlakyHook.received = [500], []
    with serving(FlakyHook) as url:
        yield url


def test_webhook_500_then_200_is_delivered_signed(pg_url, hook_server, monkeypatch):
    monkeypatch.setenv("FLOWKIT_SECRET_HOOK_KEY", "s3cret")
    store = SqlStore(pg_url)
    try:
        # Given a notifiable audit event committed
        with store.tx("scheduler") as tx:
            tx.event("sla_missed", flow="orders", reason="late by 5 min")
        hook = WebhookNotifier(hook_server, timeout=5, secret="hook_key")
        policy = DeliveryPolicy(base_delay=timedelta(milliseconds=200))
        sender = NotificationSender(store, lambda n: [hook], "it-sender", interval=0.05, policy=policy)
        # When the sender thread runs
        sender.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                [note] = list_notifications(store)
                if note["outcome"] is not None:
                    break
                time.sleep(0.05)
        finally:
            sender.stop()
            sender.join(10)
        # Then it was delivered on the second attempt, each attempt recorded
        assert note["outcome"] == "delivered", note
        assert [a["ok"] for a in note["delivery_attempts"]] == [0, 1]
        assert "HTTP 500" in note["delivery_attempts"][0]["detail"]
        # ... the server got the same signed JSON body twice
        assert len(FlakyHook.received) == 2
        for body, headers in FlakyHook.received:
            assert json.loads(body)["kind"] == "sla_missed"
            expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == expected
    finally:
        store.dispose()
