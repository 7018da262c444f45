"""One socket write per batch of AMQP publishes. Not public API.

py-amqp writes every ``basic.publish`` (its method, header and body frames) with one
``sendall`` of its own, and kombu has no batch mode for it (``Producer.batch`` pipelines
only on Redis). :class:`BufferedWrites` holds the frames a batch's publishes write and sends
them with one ``sendall`` when the batch ends: the frames are the same bytes in the same
order, so the broker sees exactly the publishes it would have seen one by one.

Durability is that of a plain ``basic.publish`` without publisher confirms (which flowkit
does not turn on): a message counts as published once its bytes were handed to the socket.
A batch whose write fails counts as not published as a whole, and its attempts stay queued
in SQL; one whose bytes did reach the broker is then delivered twice, and the second
delivery finds its attempt claimed and is dropped.

Nothing in a buffered batch may wait for the broker's answer (its reply would never come,
the request being still in the buffer): queues are declared before the batch begins, and a
connection with ``confirm_publish`` (each publish waits for its confirm) is not buffered.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class BatchNotWritten(ConnectionError):
    """The buffered publishes of a batch did not reach the socket; none counts as sent."""


class BufferedWrites:
    """Context manager: the publishes made on ``producer``'s connection inside it go out
    in one socket write at a successful exit, and are discarded at an exceptional one.

    Transports without a py-amqp socket (Redis, memory) are left as they are."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.buffer = bytearray()
        self.writes = 0  # the transport writes the buffer took (frames or whole publishes)
        self._raw: Any = None
        self._transport: Any = None
        self._real_write: Any = None

    @staticmethod
    def applies_to(raw: Any) -> bool:
        transport = getattr(raw, "transport", None)
        return (
            transport is not None
            and callable(getattr(transport, "_write", None))
            and not getattr(raw, "confirm_publish", False)
        )

    def __enter__(self) -> BufferedWrites:
        raw = self.producer.connection.connection
        if not self.applies_to(raw):
            return self
        self._raw, self._transport = raw, raw.transport
        self._real_write = self._transport._write
        self._transport._write = self._hold
        return self

    def _hold(self, data: Any) -> None:
        # py-amqp hands a view of a buffer it reuses for the next frame: copy it now
        self.buffer += data
        self.writes += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        transport: Any = self._transport
        if transport is None:
            return
        transport._write, self._transport, self._real_write = self._real_write, None, None
        data, self.buffer = bytes(self.buffer), bytearray()
        if exc_type is not None or not data:
            return
        if self._replaced(transport):
            # kombu reconnected during the batch (a publish's retry): what was buffered
            # belongs to a closed connection
            raise BatchNotWritten(
                f"the broker connection was replaced during the batch; {self.writes} buffered write(s) not sent"
            )
        try:
            transport.write(data)  # py-amqp's own write: marks the transport dead on an error
        except Exception:
            self._drop_connection()
            raise

    def _replaced(self, transport: Any) -> bool:
        current = getattr(self.producer.connection, "_connection", None)  # no reconnect here
        return current is not self._raw or getattr(current, "transport", None) is not transport

    def _drop_connection(self) -> None:
        """After a failed write: forget the connection (as kombu's retry does), so that the
        next batch connects again instead of writing to the same dead socket."""
        connection = self.producer.connection
        try:
            connection.collect()
            self.producer.revive(connection)
        except Exception as exc:  # the write's error is the one to report
            log.debug("dispatch: dropping a failed broker connection: %s", exc)
