"""Cron ticks in a flow's time zone, resolved to UTC instants, and the data intervals between them.

A cron expression is read in local wall time (croniter on naive datetimes does pure
wall-clock arithmetic); each wall tick is then resolved to zero, one or two UTC instants:
- a wall time skipped by spring-forward: `dst_missing="shift"` runs it at the first valid
  instant after the gap, `"skip"` drops it;
- a wall time repeated by fall-back: `dst_repeated="first"` runs only its first occurrence,
  `"both"` runs both.
A run's logical date is its interval's END (the tick that makes it due), as the cron
scheduler already stored it; the interval is [previous tick, tick).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

_MAX_GAP = timedelta(hours=6)  # no zone has a DST gap this long; bounds the gap search
_LOOKBEHIND = timedelta(days=1)  # wall-clock margin so a tick near `after` is not missed
#: Far from a DST change wall order is instant order, and a one-second margin is enough: a
#: day's margin walked 43,200 ticks of a 2-second cron at every sweep (4.4 s measured).
_NEAR_CHANGE = timedelta(days=1)
_QUIET_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class Interval:
    """A data interval [start, end) in UTC; its run is due at `end`."""

    start: datetime
    end: datetime

    @property
    def logical_date(self) -> datetime:
        return self.end


@dataclass(frozen=True)
class Timetable:
    cron: str
    zone: ZoneInfo
    dst_repeated: str = "first"
    dst_missing: str = "shift"

    def resolve(self, wall: datetime) -> list[datetime]:
        """The UTC instants of one naive local wall time under this DST policy (ascending)."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        if _exists(first):
            if first.utcoffset() != second.utcoffset() and self.dst_repeated == "both":
                return sorted({first.astimezone(UTC), second.astimezone(UTC)})
            return [first.astimezone(UTC)]
        if self.dst_missing == "skip":
            return []
        return [self._gap_end(wall)]

    def _gap_end(self, wall: datetime) -> datetime:
        probe = wall.replace(second=0, microsecond=0)
        limit = wall + _MAX_GAP
        while probe < limit:
            probe += timedelta(minutes=1)
            local = probe.replace(tzinfo=self.zone)
            if _exists(local):
                return local.astimezone(UTC)
        raise ValueError(f"no valid time within {_MAX_GAP} after {wall} in {self.zone.key}")

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """UTC ticks strictly after `after`, ascending, without duplicates (a shifted gap
        tick may land on the next real tick)."""
        wall = after.astimezone(self.zone).replace(tzinfo=None) - self._margin(after)
        walls = croniter(self.cron, wall)
        last = after
        while True:
            for instant in self.resolve(walls.get_next(datetime)):
                if instant > last:
                    last = instant
                    yield instant

    def ticks_until(self, until: datetime) -> Iterator[datetime]:
        """UTC ticks at or before `until`, descending, without duplicates."""
        wall = until.astimezone(self.zone).replace(tzinfo=None) + self._margin(until)
        walls = croniter(self.cron, wall)
        last: datetime | None = None
        while True:
            for instant in reversed(self.resolve(walls.get_prev(datetime))):
                if instant <= until and (last is None or instant < last):
                    last = instant
                    yield instant

    def _margin(self, at: datetime) -> timedelta:
        """The wall-clock margin around ``at``: a day when a DST change is within a day of it."""
        near = (
            (at - _NEAR_CHANGE).astimezone(self.zone).utcoffset(),
            (at + _NEAR_CHANGE).astimezone(self.zone).utcoffset(),
        )
        return _LOOKBEHIND if near[0] != near[1] else _QUIET_MARGIN

    def interval_ending(self, end: datetime) -> Interval:
        """The interval whose end is the tick `end`."""
        before = end - timedelta(microseconds=1)
        return Interval(next(self.ticks_until(before)), end)

    def latest_interval(self, now: datetime) -> Interval:
        """The newest complete interval (end <= now)."""
        return self.interval_ending(next(self.ticks_until(now)))

    def intervals_after(self, after: datetime) -> Iterator[Interval]:
        """Intervals whose end is strictly after `after`, ascending."""
        ticks = self.ticks_after(after)
        end = next(ticks)
        previous = self.interval_ending(end).start
        for tick in ticks:
            yield Interval(previous, end)
            previous, end = end, tick


def _exists(local: datetime) -> bool:
    """Whether this aware local time is a real wall time (not in a spring-forward gap)."""
    utc = local.astimezone(UTC)
    return utc.astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(tzinfo=None)
