"""Publishing flow and step callbacks (see :mod:`flowkit.execution.callbacks` for the whole
story): after the transaction that wrote them to the outbox commits, and again from the
scheduler's sweep for those not done in time. Not public API."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..store import callback_ops
from ..store.machine import CallbackDue
from .task_names import CALLBACK_TASK

log = logging.getLogger(__name__)


def publish(dispatcher: Any, items: Iterable[CallbackDue]) -> None:
    """Publish callbacks the caller's transaction wrote. A failure is only logged: the row
    stays in the outbox and the scheduler's sweep publishes it again."""
    items = list(items)
    if not items:
        return
    send = getattr(dispatcher, "dispatch_callbacks", None)
    if send is None:
        log.warning("callbacks: %s cannot publish callbacks; the scheduler's sweep will", dispatcher)
        return
    try:
        send(items)
    except Exception as exc:  # kombu raises many types; the outbox keeps the callback
        log.warning(
            "callbacks: could not publish %s callback(s) (%s); the scheduler's sweep publishes them again",
            len(items),
            exc,
        )


def resend_due(store: Any, dispatcher: Any, actor: str, dispatched_before: datetime) -> int:
    """The sweep's part: publish again callbacks not done in time. Returns how many."""
    items = callback_ops.take_due(store, actor, dispatched_before)
    publish(dispatcher, items)
    return len(items)


def send_with_celery(app: Any, default_queue: str, items: list[CallbackDue]) -> None:
    """Publish callbacks as Celery tasks (the task id is the callback's id, so a message
    published again is the same task in Flower)."""
    with app.producer_or_acquire() as producer:
        for item in items:
            where = f"{item.step}." if item.scope == "step" and item.step else ""
            app.send_task(
                CALLBACK_TASK,
                args=[item.id],
                task_id=item.id,
                queue=item.queue or default_queue,
                producer=producer,
                shadow=f"{item.flow}.{where}{item.kind}",
                headers={"flowkit_run": item.run_id, "flowkit_flow": item.flow},
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
