"""Python callables in ``notify=``: user code, so it runs on a worker, never in the scheduler.

The sender (:mod:`.sender`) claims a notification from the outbox under its lease, as for any
notifier. For a callable it writes a row to the callbacks outbox (table ``callbacks``, scope
``notify``) carrying the notification, and publishes a ``flowkit.callback`` task; a worker
loads the flow version that declared the callable, finds it by its place in ``notify=``
(checked against its recorded module and name) and calls it with the notification
(:func:`run_notify_call`). From there the callbacks outbox's own rules hold: the sweep
publishes again a row not done in time, so delivery is at least once.

The row's id is derived from the notification and the callable's place, and written with
"insert unless present": a sender that dies after writing it and before recording the
delivery leaves a row that the next sender does not write (nor publish) a second time.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..store import tables as t
from ..store.base import utcnow
from ..store.machine_types import CallbackDue

if TYPE_CHECKING:
    from ..store.sql import SqlStore

log = logging.getLogger(__name__)

#: The callbacks table's scope for a callable notifier.
NOTIFY_SCOPE = "notify"
_IDS = uuid.UUID("6f1c3e52-3b0e-4c55-9d0c-8a1f7c2b9e41")


def call_id(notification_id: int | str, index: int) -> str:
    """The callbacks row of one notification for the ``index``-th callable: the same on
    every delivery attempt, so a repeated attempt writes nothing new."""
    return str(uuid.uuid5(_IDS, f"{notification_id}:{index}"))


@dataclass
class CallPublisher:
    """Hands notifications to workers for a flow's callables (the sender's side)."""

    store: SqlStore
    dispatcher: Any

    def notifier(self, entry: dict[str, Any], version: str) -> WorkerCall:
        return WorkerCall(self, int(entry["index"]), str(entry.get("name") or "?"), version)


@dataclass
class WorkerCall:
    """One callable of ``notify=`` as the sender sees it: delivering is handing it to a worker."""

    publisher: CallPublisher = field(repr=False)
    index: int
    target: str
    version: str
    name: str = "callable"

    def __post_init__(self) -> None:
        self.name = f"callable {self.target}"

    def __call__(self, notification: dict[str, Any]) -> None:
        due = write_call(self.publisher.store, notification, self.index, self.target, self.version)
        if due is not None:
            from ..dispatch.callbacks import publish

            publish(self.publisher.dispatcher, [due])  # a failed publish: the sweep sends it again


def write_call(
    store: SqlStore, notification: dict[str, Any], index: int, target: str, version: str
) -> CallbackDue | None:
    """Write the callbacks row of this notification for this callable unless present; the
    item to publish, or None when an earlier attempt wrote it already."""
    from sqlalchemy.dialects import postgresql, sqlite

    now = utcnow()
    row_id = call_id(notification["id"], index)
    payload = {"notification": notification, "index": index, "name": target, "version": version}
    with store.engine.begin() as conn:
        dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        won = conn.execute(
            dialect_insert(t.callbacks)
            .values(
                id=row_id,
                run_id=notification.get("run_id"),
                step=notification.get("step"),
                scope=NOTIFY_SCOPE,
                kind=str(notification["kind"])[:20],
                state="notification",
                payload=json.dumps(payload, default=str),
                created_at=now,
                dispatched_at=now,
            )
            .on_conflict_do_nothing()
            .returning(t.callbacks.c.id)
        ).first()
    if won is None:
        return None
    flow = str(notification.get("flow") or "")
    return CallbackDue(row_id, notification.get("run_id"), flow, NOTIFY_SCOPE, str(notification["kind"]), None, None)


def notify_target(flow: Any, index: int, name: str) -> Any:
    """The ``index``-th callable of ``flow``'s ``notify=``, which must be the one recorded as
    ``name`` (module:qualname) when the notification was handed over."""
    fns = getattr(flow, "notify_fns", [])
    if index >= len(fns):
        raise LookupError(f"flow {flow.name!r} has no callable number {index + 1} in notify= (expected {name})")
    fn = fns[index]
    found = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    if found != name:
        raise LookupError(f"flow {flow.name!r}: notify= callable number {index + 1} is {found}, not {name}")
    return fn


def run_notify_call(flow: Any, cb: dict[str, Any]) -> None:
    """Call the notifier a callbacks row names with the notification it carries (on a worker)."""
    payload = json.loads(cb["payload"])
    fn = notify_target(flow, int(payload["index"]), str(payload["name"]))
    fn(payload["notification"])
