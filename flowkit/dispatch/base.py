"""The seam between the engine and whatever carries attempts to workers, and backpressure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..store.machine import Dispatch

__all__ = ["Backpressure", "Dispatch", "Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def queue_for(self, item: Dispatch) -> str:
        """The broker queue ``item`` goes to."""

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` on the broker (raise if it cannot be read)."""

    def dispatch_many(self, items: Iterable[Dispatch]) -> list[Dispatch]:
        """Publish attempts (one connection for the batch); returns those that failed,
        which stay queued in SQL and are published again when the broker is back."""


@dataclass
class QueueGauge:
    depth: int = 0
    read_at: float = float("-inf")
    sent: int = 0  # published since the reading: counted until the next one
    engaged: bool = False


class Backpressure:
    """Stop dispatching to a queue above ``high`` messages until it falls to ``low``
    (docs/design-notes.md#backpressure).

    The depth is read from the broker at most every ``ttl_seconds``; dispatches made since
    the reading are added to it, so one dispatcher never overshoots ``high``. Several
    dispatchers (the scheduler and the workers' fast-follow) each count their own; workers
    only fast-follow below ``low`` (:meth:`allow_fast`), which leaves the band between the
    watermarks to the scheduler's batches.
    """

    def __init__(
        self,
        read_depth: Callable[[str], int],
        *,
        high: int,
        low: int,
        ttl_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_depth = read_depth
        self.high = high
        self.low = low
        self.ttl = ttl_seconds
        self.clock = clock
        self.gauges: dict[str, QueueGauge] = {}

    def _gauge(self, queue: str) -> QueueGauge:
        g = self.gauges.setdefault(queue, QueueGauge())
        now = self.clock()
        if now - g.read_at >= self.ttl:
            try:
                g.depth, g.sent, g.read_at = self.read_depth(queue), 0, now
            except Exception as exc:  # an unreadable depth must not stop dispatching for good
                log.warning("backpressure: cannot read the depth of queue %s: %s", queue, exc)
                g.depth, g.sent, g.read_at = 0, 0, now
        return g

    def allow(self, queue: str, n: int = 1) -> bool:
        """Whether ``n`` more messages may go to ``queue`` now (and count them if so)."""
        if self.high <= 0:
            return True
        g = self._gauge(queue)
        depth = g.depth + g.sent
        if g.engaged:
            if depth > self.low:
                return False
            g.engaged = False
            log.info(
                "backpressure: queue %s at %s messages, at or below the low watermark %s; dispatching again",
                queue,
                depth,
                self.low,
            )
        if depth + n > self.high:
            g.engaged = True
            log.warning(
                "backpressure: queue %s at %s messages, the high watermark is %s; holding "
                "dispatches until it falls to %s",
                queue,
                depth,
                self.high,
                self.low,
            )
            return False
        g.sent += n
        return True

    def allow_fast(self, queue: str, n: int = 1) -> bool:
        """The workers' stricter test: ``n`` more messages keep the queue at or below ``low``.

        It counts nothing: a worker asks it for every downstream step that *might* become
        ready, most of which (a join's) do not; :meth:`sent` counts what was published. A
        reading older than ``ttl_seconds`` is taken again (a worker's last reading may be
        from its previous fan-out, long drained).
        """
        if self.high <= 0:
            return True
        g = self._gauge(queue)
        return not g.engaged and g.depth + g.sent + n <= self.low

    def sent(self, queue: str, n: int = 1) -> None:
        """``n`` messages were published to ``queue`` outside :meth:`allow`."""
        g = self._gauge(queue)
        g.sent += n

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            q: {"depth": g.depth, "sent_since_read": g.sent, "engaged": g.engaged}
            for q, g in sorted(self.gauges.items())
        }
