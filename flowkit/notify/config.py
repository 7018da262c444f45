"""A flow's ``notify=`` list: which notifiers get which kinds of notification.

Notifiers are declared as data (:class:`Webhook`, :class:`Log`) and stored in the flow's
spec, so the scheduler's sender thread builds them without importing the flow's module.
Python callables wait: until the sender runs user code (as callbacks do, on a worker), a
flow's ``on_failure=`` callback is the place for Python code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..dsl_checks import parse_duration
from ..errors import DefinitionError
from .notifiers import LogNotifier, Notifier, WebhookNotifier
from .outbox import KINDS


def _kinds(on: str | Iterable[str] | None, who: str, where: dict[str, Any]) -> tuple[str, ...]:
    if on is None:
        return KINDS
    kinds = (on,) if isinstance(on, str) else tuple(on)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise DefinitionError(f"{who}: on={list(kinds)!r}: pick kinds from {', '.join(KINDS)}", **where)
    return kinds


@dataclass(frozen=True)
class Webhook:
    """POST each notification as JSON to ``url`` (``secret`` names a flowkit secret whose
    HMAC-SHA256 of the body goes in the ``X-Flowkit-Signature`` header)."""

    url: str
    secret: str | None = None
    timeout: str | float = 10.0
    on: str | Iterable[str] | None = None

    def as_data(self, who: str, where: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise DefinitionError(
                f"{who}: Webhook url {self.url!r} is not an http(s) URL; e.g. https://hooks.example/x", **where
            )
        if self.secret is not None and not isinstance(self.secret, str):
            raise DefinitionError(
                f"{who}: Webhook secret= names a flowkit secret (a string), got {self.secret!r}", **where
            )
        try:
            timeout = parse_duration(self.timeout)
        except ValueError as exc:
            raise DefinitionError(
                f"{who}: Webhook timeout={self.timeout!r}: {exc}; e.g. timeout='10s'", **where
            ) from None
        if not timeout or timeout <= 0:
            raise DefinitionError(
                f"{who}: Webhook timeout={self.timeout!r} must be positive; e.g. timeout='10s'", **where
            )
        data = {"type": "webhook", "url": self.url, "secret": self.secret, "timeout": timeout}
        return {**data, "on": list(_kinds(self.on, who, where))}


@dataclass(frozen=True)
class Log:
    """Write each notification as one WARNING line on the ``flowkit.notify`` logger."""

    on: str | Iterable[str] | None = None

    def as_data(self, who: str, where: dict[str, Any]) -> dict[str, Any]:
        return {"type": "log", "on": list(_kinds(self.on, who, where))}


def check_notify(value: Any, who: str, where: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """``notify=`` as the JSON data the spec keeps; a wrong entry is one line naming it."""
    if value is None:
        return ()
    if isinstance(value, Webhook | Log):
        entries: list[Any] = [value]
    elif isinstance(value, list | tuple):
        entries = list(value)
    else:
        entries = [value]  # refused below, naming it
    data = []
    for entry in entries:
        if not isinstance(entry, Webhook | Log):
            hint = " (for Python code use on_failure=)" if callable(entry) else ""
            raise DefinitionError(
                f"{who}: notify= takes Webhook(...) or Log(...) from flowkit.notify, got {entry!r}{hint}", **where
            )
        data.append(entry.as_data(who, where))
    return tuple(data)


def build_notifiers(entries: Sequence[dict[str, Any]], kind: str) -> list[Notifier]:
    """The notifiers of a flow's stored ``notify`` data that take ``kind``."""
    built: list[Notifier] = []
    for entry in entries:
        if kind not in entry.get("on", KINDS):
            continue
        if entry["type"] == "webhook":
            built.append(WebhookNotifier(entry["url"], timeout=entry["timeout"], secret=entry.get("secret")))
        elif entry["type"] == "log":
            built.append(LogNotifier())
    return built
