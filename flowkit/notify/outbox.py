"""Which audit events are notifiable, and the outbox rows written for them.

``Tx.flush`` calls :func:`outbox_rows` on the events it writes, so every backend and every
path that goes through ``Tx`` writes the outbox row in the transaction of its audit event.
Rows are claimed by a lease, never by tailing ids (PostgreSQL serial ids are not committed
in id order).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

#: Audit actions that are notifiable as they are (written by the SLA and backfill features).
PLAIN_ACTIONS = frozenset({"sla_at_risk", "sla_missed", "backfill_done"})

#: Every kind of notification, for validation of ``notify`` filters and the CLI.
KINDS = ("run_failed", "retries_exhausted", "approval_waiting", *sorted(PLAIN_ACTIONS))


def notification_kind(event: dict[str, Any]) -> str | None:
    """The kind of notification an audit event raises, or None."""
    action, new, old = event.get("action"), event.get("new_state"), event.get("old_state") or ""
    if action in PLAIN_ACTIONS:
        return str(action)
    if action == "run_state" and new == "failed":
        return "run_failed"
    # A running step that fails for good has used its last attempt (a retry goes to
    # up_for_retry); an operator's mark to failed is not from running and raises nothing.
    if action == "step_state" and new == "failed" and "running" in old.split("|"):
        return "retries_exhausted"
    if action == "step_state" and new == "awaiting_approval":
        return "approval_waiting"
    return None


def outbox_rows(events: Iterable[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The outbox rows for the notifiable ones among ``events`` (audit rows as ``Tx`` keeps them)."""
    rows = []
    for e in events:
        kind = notification_kind(e)
        if kind is not None:
            rows.append(
                {
                    "kind": kind,
                    "run_id": e.get("run_id"),
                    "flow_name": e.get("flow_name"),
                    "step": e.get("step"),
                    "reason": e.get("reason") or "",
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
            )
    return rows
