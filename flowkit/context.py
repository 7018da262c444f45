"""What a step function receives: the run's params, its upstream results and identity."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class StepContext:
    """Passed to a step function that takes one argument.

    ``idempotency_key`` is the same for every delivery and retry of this step in this run:
    pass it to external systems so that an effect happens once even if the step runs twice.

    In an instance of a map step, ``item`` is its element of the ``over`` step's list and
    ``index`` its position (both None elsewhere); ``upstream`` then holds the map step's
    other upstreams, not the whole list.
    """

    flow: str
    run_id: str
    step: str
    attempt: int
    params: dict[str, Any]
    upstream: dict[str, Any]
    idempotency_key: str
    version: str | None = None
    #: In a compensation function: the step it undoes; ``upstream`` then holds that step's
    #: result, so ``ctx.result_of(ctx.compensates)`` is what the step returned.
    compensates: str | None = None
    item: Any = None
    index: int | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flowkit.step"))
    #: Reads (logical date, interval start, interval end) when a step first asks, so steps
    #: that never ask cost no query (flowkit/schedules/interval.py).
    interval_source: Callable[[], tuple[datetime | None, datetime | None, datetime | None]] | None = field(
        default=None, repr=False, compare=False
    )

    def result_of(self, step: str) -> Any:
        """The JSON result of upstream ``step`` (KeyError if it is not an upstream)."""
        return self.upstream[step]

    @cached_property
    def _interval(self) -> tuple[datetime | None, datetime | None, datetime | None]:
        return self.interval_source() if self.interval_source else (None, None, None)

    @property
    def logical_date(self) -> datetime | None:
        """A scheduled run's logical date (its interval's end, UTC); None in a manual run."""
        return self._interval[0]

    @property
    def data_interval_start(self) -> datetime | None:
        return self._interval[1]

    @property
    def data_interval_end(self) -> datetime | None:
        return self._interval[2]


@dataclass(frozen=True)
class CallbackContext:
    """Passed to an ``on_success``/``on_failure``/``on_retry`` callback (one argument).

    ``step`` is None for a flow's ``on_success``/``on_failure`` (the run ended); ``state``
    is the outcome (``success``, ``failed``, ``up_for_retry``), ``attempt`` the attempt it
    is about (None for a run) and ``error`` the failure's message. Callbacks are delivered
    at least once: one may run again after a worker is lost, so keep them idempotent.
    """

    flow: str
    run_id: str
    step: str | None
    kind: str
    state: str
    attempt: int | None
    error: str | None
    params: dict[str, Any]
    version: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flowkit.callback"))
