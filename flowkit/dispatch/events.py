"""Completion and trigger events carried by the broker, so the scheduler waits instead of polling SQL.

Events are wake-ups, not truth: the SQL store holds every state. A lost event delays
a step by at most one scheduler sweep; it never loses or duplicates work.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: How many events one wake-up drains at most before the scheduler works on them.
MAX_BATCH = 1000


class EventBus(Protocol):
    def publish(self, body: dict[str, Any]) -> None: ...
    def wait(self, timeout: float) -> list[dict[str, Any]]: ...
    def purge(self) -> int: ...
    def close(self) -> None: ...


class MemoryEvents:
    """In-process bus for unit tests."""

    def __init__(self) -> None:
        self._q: stdlib_queue.Queue[dict[str, Any]] = stdlib_queue.Queue()

    def publish(self, body: dict[str, Any]) -> None:
        self._q.put(body)

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        out = []
        try:
            out.append(self._q.get(timeout=max(timeout, 0.0)))
            while len(out) < MAX_BATCH:
                out.append(self._q.get_nowait())
        except stdlib_queue.Empty:
            pass
        return out

    def purge(self) -> int:
        n = 0
        while True:
            try:
                self._q.get_nowait()
                n += 1
            except stdlib_queue.Empty:
                return n

    def close(self) -> None:
        pass


class BrokerEvents:
    """Events on a durable queue of the Celery broker (Redis list or AMQP queue)."""

    def __init__(self, app: Any, queue_name: str) -> None:
        from kombu.entity import Queue

        self.app = app
        self.queue = Queue(queue_name, routing_key=queue_name, durable=True)
        self._conn: Any = None
        self._consumer: Any = None
        self._buffer: list[dict[str, Any]] = []
        self._declared = False
        self._lock = threading.Lock()
        self._broken = False
        #: Set when the connection came back after a failure: messages published before it
        #: failed may be gone with the broker (a restart without persistence), so the
        #: scheduler publishes its queued attempts again. The scheduler clears it.
        self.reconnected = False

    def publish(self, body: dict[str, Any]) -> None:
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=self.queue.name,
                serializer="json",
                declare=[] if self._declared else [self.queue],
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5},
            )
        self._declared = True

    def _on_message(self, body: dict[str, Any], message: Any) -> None:
        self._buffer.append(body)

    def _ensure_consumer(self) -> None:
        if self._consumer is not None:
            return
        from kombu.messaging import Consumer

        self._conn = self.app.connection_for_read()
        self._conn.ensure_connection(max_retries=5)
        channel = self._conn.channel()
        self._consumer = Consumer(
            channel, queues=[self.queue], callbacks=[self._on_message], accept=["json"], no_ack=True
        )
        self._consumer.consume()
        if self._broken:
            self._broken = False
            self.reconnected = True
            log.warning("events: broker connection restored")

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        with self._lock:
            try:
                self._ensure_consumer()
                try:
                    self._conn.drain_events(timeout=max(timeout, 0.001))
                    while len(self._buffer) < MAX_BATCH:
                        self._conn.drain_events(timeout=0.001)
                except TimeoutError:
                    pass
            except Exception as exc:  # a broker hiccup must not kill the scheduler loop
                if not self._broken:
                    log.warning("events: broker connection failed (%s); reconnecting", exc)
                self._broken = True
                self._reset()
            out, self._buffer = self._buffer, []
            return out

    def purge(self) -> int:
        with self.app.connection_for_write() as conn:
            bound = self.queue(conn.default_channel)
            bound.declare()  # RabbitMQ refuses to purge a queue nobody declared yet
            self._declared = True
            return bound.purge() or 0

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.release()
        except Exception:  # already broken
            pass
        self._conn = None
        self._consumer = None

    def close(self) -> None:
        with self._lock:
            self._reset()
