"""Bounded per-step duration statistics: the last N successful durations of a (flow, step)
and the queue waits before them, with a high percentile as the estimate.

The window is a fixed size, so folding in one finished attempt costs O(N) whatever the
length of the history, and the estimate never rescans it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Successful durations kept per (flow, step).
WINDOW_RUNS = 20
#: Fewer successes than this and the step has "no prediction".
MIN_HISTORY_RUNS = 5
#: The percentile of recent durations used as a step's estimate.
ESTIMATE_PERCENTILE = 90.0


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class StepStats:
    """The recent successful durations (seconds, oldest first) and queue waits of one step."""

    durations: tuple[float, ...] = ()
    queue_waits: tuple[float, ...] = ()

    def record(self, duration: float, queue_wait: float = 0.0, *, window: int = WINDOW_RUNS) -> StepStats:
        """These statistics with one more success folded in (the oldest dropped past ``window``)."""
        return StepStats(
            durations=(*self.durations, max(0.0, duration))[-window:],
            queue_waits=(*self.queue_waits, max(0.0, queue_wait))[-window:],
        )

    def estimate(
        self, *, pct: float = ESTIMATE_PERCENTILE, min_runs: int = MIN_HISTORY_RUNS
    ) -> tuple[float, float] | None:
        """(run seconds, queue-wait seconds) at ``pct``, or None with too little history."""
        if len(self.durations) < min_runs:
            return None
        waits = self.queue_waits or (0.0,)
        return percentile(self.durations, pct), percentile(waits, pct)

    @classmethod
    def from_samples(cls, samples: Iterable[tuple[float, float]], *, window: int = WINDOW_RUNS) -> StepStats:
        stats = cls()
        for duration, wait in samples:
            stats = stats.record(duration, wait, window=window)
        return stats
