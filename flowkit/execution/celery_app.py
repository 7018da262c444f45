"""The Celery application flowkit sends step attempts through. Not public API.

One task, ``flowkit.execute(run_id, step, attempt)``, shadowed as ``<flow>.<step>`` so
Flower shows meaningful names (docs/design-notes.md#legible-celery-tasks). Results and
states live in the SQL store, so Celery needs no result backend: one broker message per
attempt. The tasks are in :mod:`.tasks`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..config import Settings
from . import tasks


def make_app(settings: Settings, *, name: str = "flowkit") -> Celery:
    """A Celery app on ``settings.broker_url`` with flowkit's configuration and tasks."""
    app = Celery(name, broker=settings.broker_url, set_as_current=False)
    app.conf.update(celery_config(settings))
    tasks.register(app)
    return app


def celery_config(settings: Settings) -> dict[str, Any]:
    """flowkit's Celery settings (the benchmarks give raw Celery the same ones)."""
    transport_options: dict[str, Any] = {
        # Redis redelivers unacked messages after this; above the longest step timeout
        # (docs/design-notes.md#retry-timers-in-sql).
        "visibility_timeout": settings.visibility_timeout_seconds,
    }
    priority: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis", "rediss")):
        transport_options.update({"queue_order_strategy": "priority", "priority_steps": list(range(10))})
    elif settings.broker_url.startswith(("amqp", "pyamqp")):
        # RabbitMQ orders by priority only in queues declared with x-max-priority. (A queue
        # that already exists without it must be deleted once: RabbitMQ never changes it.)
        priority = {"task_queue_max_priority": 9, "task_default_priority": 0}
    return dict(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        # At-least-once: ack after the step ran; requeue if the worker process dies
        # (docs/design-notes.md#redelivery-cap).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message reserved per process, so short steps do not wait behind long ones
        # (docs/design-notes.md#backpressure).
        worker_prefetch_multiplier=1,
        # A lost broker connection must not stop a running body: its outcome goes to SQL, not
        # through the message, and a redelivered message of a finished attempt is skipped.
        # Cancelling it (True) threw away bodies at a Redis restart, some already ended.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=settings.default_queue,
        task_create_missing_queues=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        # Celery's task-sent event carries the real task name, not the shadow, and can reach
        # Flower after task-received and rename the task "flowkit.execute". The store keeps
        # dispatched_at, so skip it (one broker publish fewer per dispatch, too).
        task_send_sent_event=False,
        task_track_started=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        **priority,
    )
