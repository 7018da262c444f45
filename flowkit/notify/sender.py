"""Delivery of the outbox: claim due rows under a lease (compare-and-set in SQL), call the
notifiers, record every attempt, retry with exponential backoff, give up after a cap.

Runs in its own thread (:class:`NotificationSender`), never in the scheduler's dispatch
loop: a slow webhook never delays a dispatch. Two senders (two schedulers) never deliver one
row at once: a claim only wins on a row whose lease is free or expired. At least once: a
sender that dies mid-delivery leaves its lease to expire and another sender delivers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from ..store import tables as t
from ..store.base import one_line, row_dict, utcnow
from ..store.sql import SqlStore
from .notifiers import Notifier

#: Notifiers of a notification (by its flow and kind).
Routing = Callable[[dict[str, Any]], Sequence[Notifier]]


@dataclass(frozen=True)
class DeliveryPolicy:
    lease: timedelta = timedelta(seconds=60)
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=5)
    max_attempts: int = 8
    batch: int = 50  # bounded work per pass

    def backoff(self, attempts: int) -> timedelta:
        delay: timedelta = self.base_delay * (2 ** max(attempts - 1, 0))
        return min(delay, self.max_delay)


def routing_from_specs(store: SqlStore, dispatcher: Any = None) -> Routing:
    """Each notification goes to the notifiers its flow's current spec declares for its kind
    (``notify=``); a flow that is gone or declares none gets it recorded as delivered to none.
    With a ``dispatcher``, a Python callable among them is handed to a worker
    (:mod:`flowkit.notify.calls`); without one, callables are left out."""
    from ..errors import NotFoundError
    from ..notify.calls import CallPublisher
    from ..notify.config import build_notifiers

    calls = CallPublisher(store, dispatcher) if dispatcher is not None else None

    def routing(note: dict[str, Any]) -> Sequence[Notifier]:
        if not note.get("flow"):
            return []
        try:
            spec = store.flow_spec(note["flow"])
        except NotFoundError:  # the flow was removed: nobody to tell (a store error raises: retried)
            return []
        return build_notifiers(spec.notify, note["kind"], calls=calls, version=spec.version)

    return routing


def claim_due(store: SqlStore, holder: str, now: datetime, policy: DeliveryPolicy) -> list[dict[str, Any]]:
    """Lease up to ``policy.batch`` due rows to ``holder``; only the rows whose claim won."""
    o = t.notification_outbox.c
    free = or_(o.lease_until.is_(None), o.lease_until < now)
    due = and_(o.done_at.is_(None), o.next_attempt_at <= now, free)
    claimed = []
    with store.engine.begin() as conn:
        ids = [r.id for r in conn.execute(select(o.id).where(due).order_by(o.next_attempt_at).limit(policy.batch))]
        for nid in ids:
            won = conn.execute(
                update(t.notification_outbox)
                .where(o.id == nid, due)
                .values(lease_holder=holder, lease_until=now + policy.lease)
                .returning(*t.notification_outbox.c)
            ).first()
            if won is not None:
                claimed.append(row_dict(won))
    return claimed


def record_outcome(
    store: SqlStore,
    row: dict[str, Any],
    holder: str,
    now: datetime,
    policy: DeliveryPolicy,
    results: list[tuple[str, str | None]],
) -> bool:
    """Record each notifier's attempt and release the lease (compare-and-set on the holder):
    done when all delivered or the attempts ran out, else due again after the backoff."""
    o = t.notification_outbox.c
    number = row["attempts"] + 1
    failed = any(err is not None for _, err in results)
    done = not failed or number >= policy.max_attempts
    with store.engine.begin() as conn:
        res = conn.execute(
            update(t.notification_outbox)
            .where(o.id == row["id"], o.lease_holder == holder, o.done_at.is_(None))
            .values(
                attempts=number,
                lease_holder=None,
                lease_until=None,
                next_attempt_at=now + policy.backoff(number) if not done else now,
                done_at=now if done else None,
                outcome=("gave_up" if failed else "delivered") if done else None,
            )
        )
        if res.rowcount != 1:
            return False  # the lease was lost: the new holder records its own attempt
        for name, err in results:
            conn.execute(
                insert(t.notification_attempts).values(
                    notification_id=row["id"],
                    notifier=name,
                    number=number,
                    at=now,
                    ok=int(err is None),
                    detail=err or "",
                )
            )
    return True


def payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "run_id": row["run_id"],
        "flow": row["flow_name"],
        "step": row["step"],
        "reason": row["reason"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
    }


def deliver_once(
    store: SqlStore,
    routing: Routing,
    holder: str,
    *,
    now: datetime | None = None,
    policy: DeliveryPolicy = DeliveryPolicy(),
) -> int:
    """One pass: claim the due rows, deliver each, record the outcomes. Returns rows handled."""
    now = now or utcnow()
    rows = claim_due(store, holder, now, policy)
    for row in rows:
        _fill_flow(store, row)
        note = payload(row)
        results: list[tuple[str, str | None]] = []
        for notifier in routing(note):
            try:
                notifier(note)
                results.append((notifier.name, None))
            except Exception as exc:  # a notifier's failure is recorded, never raised
                results.append((notifier.name, one_line(exc)[:2000] or type(exc).__name__))
        record_outcome(store, row, holder, now, policy, results)
    return len(rows)


def _fill_flow(store: SqlStore, row: dict[str, Any]) -> None:
    """A run's events carry no flow name: read it from the run."""
    if row["flow_name"] is None and row["run_id"] is not None:
        with store.engine.connect() as conn:
            row["flow_name"] = conn.execute(select(t.runs.c.flow_name).where(t.runs.c.id == row["run_id"])).scalar()


def list_notifications(store: SqlStore, run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Outbox rows, newest first, each with its delivery attempts."""
    o, a = t.notification_outbox.c, t.notification_attempts.c
    with store.engine.connect() as conn:
        q = select(t.notification_outbox).order_by(o.created_at.desc(), o.id.desc()).limit(limit)
        if run_id is not None:
            q = q.where(o.run_id == run_id)
        rows = [row_dict(r) for r in conn.execute(q)]
        for r in rows:
            attempts = conn.execute(select(t.notification_attempts).where(a.notification_id == r["id"]).order_by(a.id))
            r["delivery_attempts"] = [row_dict(x) for x in attempts]
    return rows


class NotificationSender(threading.Thread):
    """Delivers the outbox in the background: the scheduler daemon starts one; its dispatch
    loop never waits on a notifier."""

    def __init__(
        self,
        store: SqlStore,
        routing: Routing,
        holder: str,
        interval: float = 2.0,
        policy: DeliveryPolicy = DeliveryPolicy(),
    ) -> None:
        super().__init__(name="flowkit-notify", daemon=True)
        self.store, self.routing, self.holder, self.interval = store, routing, holder, interval
        self.policy = policy
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                deliver_once(self.store, self.routing, self.holder, policy=self.policy)
            except Exception:  # the store is away: try again next time
                logging.getLogger("flowkit.notify").exception("notification delivery pass failed")
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
