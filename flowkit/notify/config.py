"""A flow's ``notify=`` list: which notifiers get which kinds of notification.

Notifiers are declared as data (:class:`Webhook`, :class:`Log`) and stored in the flow's
spec, so the scheduler's sender thread builds them without importing the flow's module.
A Python callable (``notify=[page_oncall]``, or ``Call(page_oncall, on=...)`` to pick kinds)
is user code: the spec keeps its place and name, and the sender hands each notification to
a worker, which calls it from the flow version that declared it (:mod:`.calls`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


@dataclass(frozen=True)
class Call:
    """Call ``fn(notification)`` on a worker for the kinds ``on`` (all when None). A bare
    callable in ``notify=`` is the same as ``Call(fn)``. ``notification`` is the dict a webhook
    gets (kind, run_id, flow, step, reason, created_at, id)."""

    fn: Callable[[dict[str, Any]], Any]
    on: str | Iterable[str] | None = None

    def as_data(self, who: str, where: dict[str, Any], index: int) -> dict[str, Any]:
        if not callable(self.fn):
            raise DefinitionError(
                f"{who}: Call({self.fn!r}) is not callable; pass a function that takes the notification, "
                "e.g. def page(note): ...",
                **where,
            )
        name = f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"
        return {"type": "callable", "index": index, "name": name, "on": list(_kinds(self.on, who, where))}


def _entries(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def notify_callables(value: Any) -> list[Callable[[dict[str, Any]], Any]]:
    """The Python callables of ``notify=``, in order (their ``index`` in the spec's data)."""
    out = []
    for entry in _entries(value):
        if isinstance(entry, Call):
            out.append(entry.fn)
        elif callable(entry) and not isinstance(entry, Webhook | Log):
            out.append(entry)
    return out


def check_notify(value: Any, who: str, where: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """``notify=`` as the JSON data the spec keeps; a wrong entry is one line naming it."""
    data = []
    calls = 0
    for entry in _entries(value):
        if isinstance(entry, Webhook | Log):
            data.append(entry.as_data(who, where))
        elif isinstance(entry, Call) or callable(entry):
            call = entry if isinstance(entry, Call) else Call(entry)
            data.append(call.as_data(who, where, calls))
            calls += 1
        else:
            raise DefinitionError(
                f"{who}: notify= takes Webhook(...), Log(...) or Call(fn) from flowkit.notify, or a "
                f"function that takes the notification; got {entry!r}",
                **where,
            )
    return tuple(data)


def build_notifiers(
    entries: Sequence[dict[str, Any]], kind: str, *, calls: Any = None, version: str | None = None
) -> list[Notifier]:
    """The notifiers of a flow's stored ``notify`` data that take ``kind``. A callable is
    handed to a worker through ``calls`` (a :class:`.calls.CallPublisher`, for flow
    ``version``); without one it is left out."""
    built: list[Notifier] = []
    for entry in entries:
        if kind not in entry.get("on", KINDS):
            continue
        if entry["type"] == "webhook":
            built.append(WebhookNotifier(entry["url"], timeout=entry["timeout"], secret=entry.get("secret")))
        elif entry["type"] == "log":
            built.append(LogNotifier())
        elif entry["type"] == "callable" and calls is not None and version is not None:
            built.append(calls.notifier(entry, version))
    return built
