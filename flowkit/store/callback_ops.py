"""The callbacks outbox in SQL: read one, mark it done, find the ones to publish again.

Not public API. Rows are written by :meth:`.machine.Machine.callback`, in the transaction
that recorded the outcome; see :mod:`flowkit.callbacks`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from . import tables as t
from .base import row_dict
from .machine import CallbackDue

if TYPE_CHECKING:
    from .sql import SqlStore


def load(store: SqlStore, callback_id: str) -> dict[str, Any] | None:
    """The callback with its run's flow, version and params (None if unknown)."""
    c, r = t.callbacks.c, t.runs.c
    with store._conn() as conn:
        row = conn.execute(
            select(t.callbacks, r.flow_name, r.version, r.params)
            .join_from(t.callbacks, t.runs, c.run_id == r.id, isouter=True)  # a notification may have no run
            .where(c.id == callback_id)
        ).first()
    if row is None:
        return None
    out = row_dict(row)
    out["params"] = json.loads(out["params"] or "{}")
    if out["payload"] is not None:  # a callable notifier runs from the version that declared it
        payload = json.loads(out["payload"])
        out["flow_name"] = payload["notification"].get("flow") or out["flow_name"]
        out["version"] = payload["version"]
    return out


def finish(store: SqlStore, cb: dict[str, Any], *, actor: str, error: str | None) -> bool:
    """Mark the callback done and leave its audit event; False if another delivery did."""
    c = t.callbacks.c
    with store.tx(actor) as tx:
        won = (
            tx.conn.execute(
                update(t.callbacks).where(c.id == cb["id"], c.done_at.is_(None)).values(done_at=tx.now)
            ).rowcount
            == 1
        )
        if won:
            what = f"{cb['scope']} {cb['kind']} callback ({cb['state']})"
            if cb.get("payload"):
                what = f"notify= callable {json.loads(cb['payload'])['name']} for {cb['kind']}"
            tx.event(
                "callback_failed" if error else "callback_ran",
                run_id=cb["run_id"],
                step=cb["step"],
                attempt=cb["attempt"],
                reason=f"{what}: {error}" if error else what,
            )
    return won


def take_due(store: SqlStore, actor: str, dispatched_before: datetime) -> list[CallbackDue]:
    """Callbacks published before ``dispatched_before`` and not done (the publish was lost,
    or the worker running it died): renew their lease and return them to publish again."""
    c, r = t.callbacks.c, t.runs.c
    out: list[CallbackDue] = []
    with store.tx(actor) as tx:
        rows = tx.conn.execute(
            select(t.callbacks, r.flow_name)
            .join_from(t.callbacks, t.runs, c.run_id == r.id, isouter=True)  # a notification may have no run
            .where(c.done_at.is_(None), c.dispatched_at < dispatched_before)
            .limit(500)
        ).all()
        for row in rows:
            if (
                tx.conn.execute(
                    update(t.callbacks)
                    .where(c.id == row.id, c.done_at.is_(None), c.dispatched_at == row.dispatched_at)
                    .values(dispatched_at=tx.now)
                ).rowcount
                == 1
            ):
                tx.event(
                    "callback_resent",
                    run_id=row.run_id,
                    step=row.step,
                    attempt=row.attempt,
                    reason=f"{row.scope} {row.kind} callback not done in time; published again",
                )
                flow = row.flow_name or json.loads(row.payload or "{}").get("notification", {}).get("flow") or ""
                out.append(CallbackDue(row.id, row.run_id, flow, row.scope, row.kind, row.step, row.queue))
    return out


def pending(store: SqlStore, run_id: str) -> int:
    """Callbacks of ``run_id`` not done yet."""
    from sqlalchemy import func

    c = t.callbacks.c
    with store._conn() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(t.callbacks).where(c.run_id == run_id, c.done_at.is_(None))
            ).scalar()
            or 0
        )
