"""The predicted finish of a running run: now + the longest remaining path through its DAG.

Each step not yet done weighs its estimate (a high percentile of its recent successful
durations plus its queue wait, see :mod:`flowkit.sla.history`); a running step weighs what
remains of its estimate (past its estimate, ``OVERRUN_FACTOR`` times its overrun so far: see
:func:`remaining_seconds`); a finished step weighs nothing. The longest path is the critical
path: shortening any other step would not bring the finish nearer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowkit.graph import topo_order
from flowkit.sla.history import ESTIMATE_PERCENTILE, MIN_HISTORY_RUNS, StepStats

#: Past its estimate a running step is expected to need this many times its overrun so far.
#: Growing with the overrun, from zero at the estimate: a step a hair past its p90 (one in
#: ten ordinary runs) adds a hair, not a leap (the earlier rule, "as long again as it has
#: run", doubled such a step's time at once and so flagged any run near its deadline whose
#: step ran a hair long), while a step far past it soon dominates the path. 2: with a
#: sweep every 5 s, a step slowed 5x is flagged with >= 80% of the time left once its
#: overrun shows (test_sla_predict.py: 84% at 1.5 to 2, 79% at 1.4 and below).
OVERRUN_FACTOR = 2.0

#: Step states that count as done for prediction (they add no more time).
DONE_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "cancelled"})


@dataclass(frozen=True)
class StepProgress:
    """What the store knows of one step of the run being predicted."""

    state: str
    #: Seconds since the step started running (running steps), or since it was dispatched (queued).
    elapsed_seconds: float = 0.0


@dataclass(frozen=True)
class Prediction:
    finish_at: datetime
    critical_path: tuple[str, ...]
    #: Remaining seconds per step on the critical path, in path order.
    step_seconds: tuple[float, ...]

    def slack_seconds(self, deadline_at: datetime) -> float:
        """Deadline minus predicted finish: negative means the run is predicted late."""
        return (deadline_at - self.finish_at).total_seconds()


@dataclass(frozen=True)
class NoPrediction:
    """Too little history for some remaining step: say so rather than guess."""

    steps_without_history: tuple[str, ...]

    @property
    def reason(self) -> str:
        names = ", ".join(self.steps_without_history)
        return f"no prediction: fewer than {MIN_HISTORY_RUNS} successful runs of {names}"


def remaining_seconds(
    progress: StepProgress, stats: StepStats | None, *, pct: float = ESTIMATE_PERCENTILE
) -> float | None:
    """The seconds this step still needs, or None with too little history."""
    if progress.state in DONE_STATES:
        return 0.0
    estimate = stats.estimate(pct=pct) if stats is not None else None
    if estimate is None:
        return None
    run, wait = estimate
    if progress.state == "running":
        if progress.elapsed_seconds <= run:
            return run - progress.elapsed_seconds
        # Past its estimate the step is off its history: expect more the further past it
        # is, rather than "any second now", so a slow step is flagged early.
        return OVERRUN_FACTOR * (progress.elapsed_seconds - run)
    if progress.state == "queued":
        return max(0.0, wait - progress.elapsed_seconds) + run
    return wait + run


def predict_finish(
    upstream: Mapping[str, Sequence[str]],
    progress: Mapping[str, StepProgress],
    stats: Mapping[str, StepStats],
    now: datetime,
    *,
    pct: float = ESTIMATE_PERCENTILE,
) -> Prediction | NoPrediction:
    """The predicted finish of a run whose steps have ``upstream`` dependencies.

    A step missing from ``progress`` has not been created yet and counts as pending.
    """
    cost: dict[str, float] = {}
    missing: list[str] = []
    for name in upstream:
        seconds = remaining_seconds(progress.get(name, StepProgress("pending")), stats.get(name), pct=pct)
        if seconds is None:
            missing.append(name)
        else:
            cost[name] = seconds
    if missing:
        return NoPrediction(tuple(missing))
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for name in topo_order({n: tuple(u) for n, u in upstream.items()}):
        latest = max(upstream[name], key=lambda u: finish[u], default=None)
        finish[name] = (finish[latest] if latest is not None else 0.0) + cost[name]
        before[name] = latest
    last = max(finish, key=lambda n: finish[n])
    path: list[str] = []
    cursor: str | None = last
    while cursor is not None:
        path.append(cursor)
        cursor = before[cursor]
    path.reverse()
    path = [n for n in path if cost[n] > 0] or path[-1:]
    return Prediction(
        finish_at=now + timedelta(seconds=finish[last]),
        critical_path=tuple(path),
        step_seconds=tuple(cost[n] for n in path),
    )
