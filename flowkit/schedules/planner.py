"""What a sweep creates now for one scheduled flow: catch-up, first interval, overlap.

The first-interval rule (new flow, unpaused flow, changed schedule are the same case):
an interval is due when its end is <= now, its start is >= start_date (if set), its end
is <= end_date (if set), and its end is strictly after the flow's last scheduled logical
date (so nothing is created twice). Without catch-up only the newest due interval is
created; with catch-up every due interval is, oldest first, at most `max_catchup` a sweep.
A flow with no scheduled run yet and no start_date has only its newest complete
interval due (there is no earlier point to catch up from), so it is never skipped.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from .options import ScheduleOptions
from .timetable import Interval


def due_intervals(opts: ScheduleOptions, *, now: datetime, last_logical: datetime | None) -> list[Interval]:
    timetable = opts.timetable()
    floor = last_logical
    # With catch-up from start_date, start from the tick at or before it; intervals
    # starting before start_date are then filtered out.
    if opts.catchup and floor is None and opts.start_date is not None:
        floor = next(timetable.ticks_until(opts.start_date))
    if not opts.catchup or floor is None:
        newest = timetable.latest_interval(now)
        return [newest] if _in_bounds(opts, newest, floor) else []
    due: list[Interval] = []
    for interval in timetable.intervals_after(floor):
        if interval.end > now or (opts.end_date and interval.end > opts.end_date):
            break
        if _in_bounds(opts, interval, floor):
            due.append(interval)
            if len(due) >= opts.max_catchup:
                break
    return due


def _in_bounds(opts: ScheduleOptions, interval: Interval, floor: datetime | None) -> bool:
    if floor is not None and interval.end <= floor:
        return False
    if opts.start_date is not None and interval.start < opts.start_date:
        return False
    return opts.end_date is None or interval.end <= opts.end_date


class OverlapAction(StrEnum):
    CREATE = "create"  # nothing is running: create and start
    SKIP = "skip"  # drop this interval (the previous run is still going)
    BUFFER = "buffer"  # create it queued; it starts when the previous run ends
    CANCEL_OTHER = "cancel_other"  # cancel the running one, then create and start


def overlap_action(policy: str, *, previous_active: bool, buffered: int) -> OverlapAction:
    """What a due scheduled run does while the flow's previous scheduled run may be going.
    `buffered` counts scheduled runs already held queued behind it."""
    if not previous_active:
        return OverlapAction.BUFFER if buffered else OverlapAction.CREATE
    if policy == "buffer_all" or (policy == "buffer_one" and buffered == 0):
        return OverlapAction.BUFFER
    if policy == "cancel_other":
        return OverlapAction.CANCEL_OTHER
    return OverlapAction.SKIP
