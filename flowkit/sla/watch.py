"""The scheduler's deadline check, as pure decisions on its own clock.

Each decision says which audit action to raise now: ``sla_at_risk`` once a run's predicted
finish passes its deadline (before the deadline), ``sla_missed`` once the deadline passes
with the run unfinished. The store records that an action was raised (a column or a unique
row), so a restart or a second scheduler does not raise it again: callers pass that record
in as ``already``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowkit.sla.deadline import Deadline, as_utc
from flowkit.sla.predict import NoPrediction, Prediction

SLA_AT_RISK = "sla_at_risk"
SLA_MISSED = "sla_missed"
#: How far back the sweep looks for scheduled intervals that never got a run.
MISSED_SCHEDULE_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class SlaEvent:
    action: str
    reason: str


def sla_events(
    deadline_at: datetime,
    prediction: Prediction | NoPrediction | None,
    now: datetime,
    *,
    finished: bool,
    already: frozenset[str] = frozenset(),
    subject: str = "run",
) -> list[SlaEvent]:
    """The SLA actions to raise now for one run (or one step), each at most once."""
    if finished:
        return []
    due = deadline_at.isoformat(timespec="seconds")
    if now >= deadline_at:
        if SLA_MISSED in already:
            return []
        return [SlaEvent(SLA_MISSED, f"{subject} unfinished at its deadline {due}")]
    if SLA_AT_RISK in already or not isinstance(prediction, Prediction):
        return []
    if prediction.finish_at <= deadline_at:
        return []
    finish = prediction.finish_at.isoformat(timespec="seconds")
    path = " -> ".join(prediction.critical_path)
    return [
        SlaEvent(
            SLA_AT_RISK, f"{subject} predicted to finish {finish}, after its deadline {due} (critical path {path})"
        )
    ]


def scheduled_intervals(schedule: str, since: datetime, until: datetime) -> Iterator[datetime]:
    """The logical dates ``schedule`` (cron) fires in (since, until], in UTC.

    Kept in one small function so the schedule computation can be repointed at the
    scheduler's own when it changes.
    """
    from croniter import croniter  # lazy: only flows with a schedule need it

    it = croniter(schedule, as_utc(since))
    while True:
        moment = as_utc(it.get_next(datetime))
        if moment > as_utc(until):
            return
        yield moment


def missed_scheduled_runs(
    schedule: str,
    deadline: Deadline,
    now: datetime,
    *,
    has_run: set[datetime],
    timezone: str = "UTC",
    lookback: timedelta = MISSED_SCHEDULE_LOOKBACK,
) -> list[datetime]:
    """Logical dates of ``schedule`` whose ``by=`` deadline has passed with no run created.

    ``has_run`` holds the logical dates (UTC) that have a run; ``within=`` deadlines count
    from a run's creation, so only ``by=`` deadlines apply to runs that never started.
    """
    if deadline.by is None:
        return []
    now = as_utc(now)
    missed = []
    for logical in scheduled_intervals(schedule, now - lookback, now):
        if logical in has_run:
            continue
        if deadline.due_at(logical_date=logical, created_at=logical, timezone=timezone) <= now:
            missed.append(logical)
    return missed
