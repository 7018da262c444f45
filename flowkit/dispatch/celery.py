"""Publishes step attempts as Celery tasks and reads queue depths. Not public API."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from ..config import Settings, redact
from .amqp_batch import BufferedWrites
from .base import Dispatch

log = logging.getLogger(__name__)

#: Messages published per round trip (a Redis pipeline, one socket write on RabbitMQ).
PUBLISH_BATCH = 500
#: Retries of each publish and of a batch's queue declaration.
PUBLISH_RETRY: dict[str, Any] = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
#: The first batch is small and each next one 4x larger, up to PUBLISH_BATCH: a worker
#: idles until the first flush, and building 500 messages takes about 0.1 s.
FIRST_BATCH = 16
#: How long a cancel waits for the workers' answers about what they stopped. Every worker
#: answers a broadcast at once, except one on the solo pool, which is busy with its step.
STOP_REPLY_SECONDS = 1.0


class CeleryDispatcher:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._redis = settings.broker_url.startswith(("redis", "rediss"))
        self._depth_conn: Any = None
        self._lock = threading.Lock()

    def queue_for(self, item: Dispatch) -> str:
        return item.step.queue or self.settings.default_queue

    def queue_name(self, queue: str | None) -> str:
        return queue or self.settings.default_queue

    def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue``: LLEN over Redis's priority lists, or AMQP's count."""
        from kombu.exceptions import ChannelError

        with self._lock:
            try:
                if self._depth_conn is None:
                    self._depth_conn = self.app.connection_for_read()
                    self._depth_conn.ensure_connection(max_retries=1)
                channel = self._depth_conn.default_channel
                try:
                    return int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:  # not declared yet (or an empty Redis list): nothing waits
                    if not self._redis:
                        self._depth_conn.release()
                        self._depth_conn = None
                    return 0
            except Exception:
                if self._depth_conn is not None:
                    try:
                        self._depth_conn.release()
                    except Exception:  # already broken
                        pass
                self._depth_conn = None
                raise

    def _options(self, item: Dispatch) -> dict[str, Any]:
        step = item.step
        options: dict[str, Any] = {}
        if step.timeout_seconds:
            # flowkit.timeouts stops the step on every pool; on prefork, Celery's hard limit
            # also kills a pool child whose step ignored that (the last resort).
            options["time_limit"] = step.timeout_seconds + max(5.0, step.timeout_seconds * 0.1)
        if step.priority is not None:
            # flowkit: 9 runs first. Redis (kombu): 0 is served first; AMQP: higher first.
            options["priority"] = 9 - step.priority if self._redis else step.priority
        return options

    def dispatch_callbacks(self, items: list[Any]) -> None:
        """Publish ``flowkit.callback`` tasks (see flowkit.execution.callbacks); raises on failure."""
        from .callbacks import send_with_celery

        send_with_celery(self.app, self.settings.default_queue, items)

    def revoke(self, task_ids: list[str]) -> dict[str, str]:
        """Stop these attempts (an operator cancelled them). Every worker drops their queued
        messages; the worker running one stops what its pool allows and says what it did
        (:func:`flowkit.execution.cancel.stop_cancelled`). Returns those answers, per task id.

        Celery's own ``terminate=True`` is not used: on the threads and solo pools it only
        logs a NotImplementedError, and it knows nothing of a shell step's process group."""
        from .task_names import STOP_COMMAND

        self.app.control.revoke(task_ids)
        replies = self.app.control.broadcast(
            STOP_COMMAND, arguments={"task_ids": task_ids}, reply=True, timeout=STOP_REPLY_SECONDS
        )
        outcomes: dict[str, str] = {}
        for reply in replies or []:
            for answer in reply.values():
                if isinstance(answer, dict):
                    outcomes.update({str(k): str(v) for k, v in answer.items()})
        return outcomes

    def dispatch_many(self, items: Iterable[Dispatch]) -> list[Dispatch]:
        """Publish ``items``; returns those not published (kept queued in SQL, sent again).

        The messages go out in batches: on Redis pipelined (kombu's ``Producer.batch``), on
        RabbitMQ written to the socket at once (:class:`~flowkit.dispatch.amqp_batch.
        BufferedWrites`): one round trip per batch instead of one per message, which was the
        scheduler's largest cost when a fan-out made thousands of steps ready. The batch's
        queues are declared once before it, not once per message. A batch whose flush fails
        counts as unpublished as a whole; a message of it that did go out arrives twice, and
        the second delivery finds its attempt claimed and is dropped.
        """
        items = list(items)
        if not items:
            return []
        try:
            with self.app.producer_or_acquire() as producer:
                start, size = 0, FIRST_BATCH
                while start < len(items):
                    chunk = items[start : start + size]
                    try:
                        declared = self._declare(producer, chunk)
                        with self._batch(producer, len(chunk)):
                            sent = self._send_each(producer, chunk, declared)
                    except Exception as exc:  # the batch's flush: the broker went away
                        log.error(
                            "dispatch: publishing %s attempt(s) to %s failed (%s); they stay "
                            "queued and are published again",
                            len(chunk),
                            redact(self.settings.broker_url),
                            exc,
                        )
                        return items[start:]
                    if sent < len(chunk):
                        return items[start + sent :]
                    start, size = start + len(chunk), min(size * 4, PUBLISH_BATCH)
        except Exception as exc:  # no connection at all
            log.error(
                "dispatch: broker %s unreachable (%s); %s attempt(s) stay queued in SQL",
                redact(self.settings.broker_url),
                exc,
                len(items),
            )
            return items
        return []

    def _batch(self, producer: Any, size: int) -> contextlib.AbstractContextManager[Any]:
        """What holds a batch's publishes until it ends (see :meth:`dispatch_many`)."""
        if self._redis:
            return producer.batch(max_size=size) if hasattr(producer, "batch") else contextlib.nullcontext()
        return BufferedWrites(producer)

    def _declare(self, producer: Any, items: list[Dispatch]) -> set[str]:
        """Declare the queues of ``items`` once for their batch (kombu remembers what it
        declared on a connection; Celery would otherwise ask it again for every message).
        Returns the queue names declared; raises if the broker cannot be reached."""
        declare = getattr(producer, "maybe_declare", None)
        if declare is None:  # not a kombu producer: Celery declares per message
            return set()
        names = {self.queue_for(item) for item in items}
        for name in sorted(names):
            declare(self.app.amqp.queues[name], retry=True, **PUBLISH_RETRY)
        return names

    def _send_each(self, producer: Any, items: list[Dispatch], declared: set[str] | None = None) -> int:
        """Send ``items`` in order on ``producer``; returns how many were sent before one failed.
        A queue in ``declared`` was declared for this batch, and is not declared again per message."""
        from .task_names import EXECUTE_TASK

        for i, item in enumerate(items):
            queue = self.queue_for(item)
            try:
                self.app.send_task(
                    EXECUTE_TASK,
                    args=[item.run_id, item.step.name, item.attempt],
                    task_id=item.task_id,
                    queue=queue,
                    declare=[] if declared is not None and queue in declared else None,
                    shadow=f"{item.flow}.{item.step.name}",
                    headers={
                        "flowkit_run": item.run_id,
                        "flowkit_step": item.step.name,
                        "flowkit_attempt": item.attempt,
                        "flowkit_flow": item.flow,
                    },
                    producer=producer,
                    retry=True,
                    retry_policy=PUBLISH_RETRY,
                    **self._options(item),
                )
            except Exception as exc:  # kombu raises many types; SQL keeps the attempt
                log.error(
                    "run %s step %s: could not publish attempt %s to %s: %s; it stays "
                    "queued and is published again when the broker is back",
                    item.run_id,
                    item.step.name,
                    item.attempt,
                    redact(self.settings.broker_url),
                    exc,
                )
                return i
        return len(items)
