"""Notifiers: a Python callable, a log line, a webhook (POST JSON, optional HMAC-SHA256).

Each takes a notification (a dict: kind, run_id, flow, step, reason, created_at) and raises
on failure; the sender records the attempt and retries later with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("flowkit.notify")

#: (url, body, headers, timeout) -> HTTP status; injected in tests.
Poster = Callable[[str, bytes, dict[str, str], float], int]


class Notifier(Protocol):
    name: str

    def __call__(self, notification: dict[str, Any]) -> None: ...


class NotificationFailed(Exception):
    """A notifier could not deliver (the sender retries with backoff)."""


@dataclass
class CallableNotifier:
    fn: Callable[[dict[str, Any]], object]
    name: str = "callable"

    def __call__(self, notification: dict[str, Any]) -> None:
        self.fn(notification)


@dataclass
class LogNotifier:
    level: int = logging.WARNING
    name: str = "log"

    def __call__(self, notification: dict[str, Any]) -> None:
        n = notification
        where = f"{n.get('flow') or '-'} run {n.get('run_id') or '-'}" + (f" step {n['step']}" if n.get("step") else "")
        log.log(self.level, "%s: %s: %s", n["kind"], where, n.get("reason", ""))


def urllib_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the operator's URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


SIGNATURE_HEADER = "X-Flowkit-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class WebhookNotifier:
    """POST the notification as JSON; a 2xx answer is a delivery. With ``secret``, the body's
    HMAC-SHA256 goes in the ``X-Flowkit-Signature`` header (``sha256=<hex>``); ``secret`` names a
    flowkit secret (:func:`flowkit.secrets.secret`), read at delivery so it never sits in a spec."""

    url: str
    timeout: float = 10.0
    secret: str | None = None
    post: Poster = field(default=urllib_post, repr=False)
    name: str = "webhook"

    def __call__(self, notification: dict[str, Any]) -> None:
        body = json.dumps(notification, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            from ..secrets import secret

            headers[SIGNATURE_HEADER] = sign(secret(self.secret), body)
        status = self.post(self.url, body, headers, self.timeout)
        if not 200 <= status < 300:
            raise NotificationFailed(f"webhook {self.url} answered HTTP {status}")
