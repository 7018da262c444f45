"""What a backfill does, decided without the store: its range, its intervals, the choice for
an interval that already has a run, and its estimated finish.

An interval is in the backfill when it lies wholly inside [start, end]: its start is at or
after ``start`` and its end (its logical date) at or before ``end``. Intervals come from the
flow's own timetable (time zone and DST policy included), so a backfill run has the logical
date and data interval a scheduled run of that interval would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from ..errors import FlowkitError
from ..schedules.options import ScheduleOptions
from ..schedules.timetable import Interval, Timetable
from ..spec import FlowSpec

REPROCESS = ("none", "failed", "all")
#: A range with more intervals is refused: counting it and showing its progress stay cheap.
MAX_INTERVALS = 100_000
_LIVE = ("queued", "running", "paused")


class BackfillError(FlowkitError):
    """A backfill that cannot be created or changed as asked (one line, with the fix)."""


class Action(StrEnum):
    CREATE = "create"  # no run for the interval: create one in the backfill's lane
    RERUN = "rerun"  # its run ended and --reprocess asks for it again (operator retry path)
    LEAVE = "leave"  # keep the run it has


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def timetable_of(spec: FlowSpec) -> Timetable:
    if not spec.schedule:
        raise BackfillError(
            f'flow "{spec.name}" has no schedule=, so it has no intervals to backfill; give it a '
            f"schedule, or start single runs with `flowkit trigger {spec.name}`",
            flow=spec.name,
        )
    return ScheduleOptions.from_dict(spec.schedule, spec.schedule_options).timetable()


def parse_when(text: str, zone: ZoneInfo, option: str) -> datetime:
    """An ISO date or date-time; without an offset it is read in the flow's time zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackfillError(
            f"{option} {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (read in the flow's "
            f"time zone, {zone.key}, unless it has an offset)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def check_range(flow: str, start: datetime, end: datetime, now: datetime) -> None:
    if end <= start:
        raise BackfillError(f"--end {end.isoformat()} is not after --start {start.isoformat()}; swap them", flow=flow)
    if end > now:
        raise BackfillError(
            f"--end {end.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}); a backfill "
            "runs complete past intervals only (the schedule creates the rest): give an earlier --end",
            flow=flow,
        )


def intervals(
    timetable: Timetable, start: datetime, end: datetime, *, backwards: bool = False, after: datetime | None = None
) -> Iterator[Interval]:
    """The range's intervals, oldest first (newest first with ``backwards``), resuming past
    the interval whose logical date is ``after`` (the backfill's cursor)."""
    if backwards:
        until = after - timedelta(microseconds=1) if after is not None else end
        for tick in timetable.ticks_until(until):
            interval = timetable.interval_ending(tick)
            if interval.start < start:
                return
            yield interval
        return
    for interval in timetable.intervals_after(after if after is not None else start):
        if interval.end > end:
            return
        if interval.start >= start:
            yield interval


def count_intervals(flow: str, timetable: Timetable, start: datetime, end: datetime) -> int:
    n = 0
    for _ in intervals(timetable, start, end):
        n += 1
        if n > MAX_INTERVALS:
            raise BackfillError(
                f"the range holds more than {MAX_INTERVALS:,} intervals of schedule {timetable.cron!r}; "
                "split it into several backfills",
                flow=flow,
            )
    if n == 0:
        raise BackfillError(
            f"no interval of schedule {timetable.cron!r} ({timetable.zone.key}) lies wholly between "
            f"{start.isoformat()} and {end.isoformat()}; widen the range",
            flow=flow,
        )
    return n


def decide(reprocess: str, run_state: str | None, *, own: bool = False) -> Decision:
    """What a backfill does with an interval whose latest run is in ``run_state`` (None: it
    has none). ``own``: the run is already this backfill's (created before a crash lost the
    cursor's update): it is never made twice."""
    if run_state is None:
        return Decision(Action.CREATE, "no run yet")
    if own:
        return Decision(Action.LEAVE, "already this backfill's run")
    if run_state in _LIVE:
        return Decision(Action.LEAVE, f"its run is {run_state}: left alone whatever --reprocess")
    if reprocess == "all" or (reprocess == "failed" and run_state == "failed"):
        return Decision(Action.RERUN, f"its run {run_state}; --reprocess {reprocess} runs it again")
    return Decision(Action.LEAVE, f"its run {run_state}; --reprocess {reprocess} keeps it")


def estimate_finish(
    now: datetime, *, finished: int, remaining: int, first_started: datetime | None, last_ended: datetime | None
) -> datetime | None:
    """The finish at the rate its runs have ended so far, from its first start to its latest
    end (both the database's times); None before any ended."""
    if remaining == 0:
        return now
    if not finished or first_started is None or last_ended is None or last_ended <= first_started:
        return None
    per_run = (last_ended - first_started) / finished
    return max(now, last_ended) + per_run * remaining
