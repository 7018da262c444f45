"""Publishes step attempts as Celery tasks. Not public API."""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings, redact
from ..errors import DispatchError
from .base import Dispatch

log = logging.getLogger(__name__)


class CeleryDispatcher:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._redis = settings.broker_url.startswith(("redis", "rediss"))

    def can_dispatch(self, queue: str) -> bool:
        return True  # queue-depth backpressure reads the broker here (a later issue)

    def queue_for(self, item: Dispatch) -> str:
        return item.step.queue or self.settings.default_queue

    def dispatch(self, item: Dispatch) -> None:
        from ..celery_app import EXECUTE_TASK

        step = item.step
        options: dict[str, Any] = {}
        if step.timeout_seconds:
            # The soft limit raises inside the step (recorded as a timeout); the hard one
            # kills a step that ignores it.
            options["soft_time_limit"] = step.timeout_seconds
            options["time_limit"] = step.timeout_seconds + max(5.0, step.timeout_seconds * 0.1)
        if step.priority is not None:
            # flowkit: 9 runs first. Redis (kombu): 0 is served first; AMQP: higher first.
            options["priority"] = 9 - step.priority if self._redis else step.priority
        try:
            self.app.send_task(
                EXECUTE_TASK,
                args=[item.run_id, step.name, item.attempt],
                task_id=item.task_id,
                queue=self.queue_for(item),
                shadow=f"{item.flow}.{step.name}",
                headers={"flowkit_run": item.run_id, "flowkit_step": step.name,
                         "flowkit_attempt": item.attempt, "flowkit_flow": item.flow},
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
                **options,
            )
        except Exception as exc:  # kombu raises many types; the lease makes this recoverable
            raise DispatchError(
                f"run {item.run_id} step {step.name}: could not publish attempt {item.attempt} "
                f"to {redact(self.settings.broker_url)}: {exc}; it stays queued and is published "
                "again when its lease expires"
            ) from exc
