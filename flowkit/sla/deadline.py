"""The ``Deadline`` option of a flow or a step, its validation and when it falls.

``Deadline(by="06:00", day_offset=1)`` is a time of day in the flow's time zone on the
day of the run's logical date (plus ``day_offset`` days). ``Deadline(within="2h")`` counts
from the run's creation. A step's deadline counts from the run's creation too (not from
the step's start): a step that waits long in a queue is late for whoever waits on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowkit.dsl_checks import caller_location, parse_duration
from flowkit.errors import DefinitionError

_TIME_OF_DAY_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
#: A day offset beyond this is surely a typo (a deadline a month after the logical date).
MAX_DAY_OFFSET_DAYS = 31


@dataclass(frozen=True)
class Deadline:
    """When a run (or a step) must be done: ``by`` a time of day or ``within`` a duration."""

    by: str | None = None
    within: str | float | None = None
    day_offset: int = 0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            path, lineno = caller_location(3)  # past __post_init__ and the dataclass __init__
            raise DefinitionError(f"{self!r}: {problem}", path=path, lineno=lineno)

    def _problem(self) -> str | None:
        if (self.by is None) == (self.within is None):
            return 'give exactly one of by="HH:MM" (a time of day) or within="2h" (from the run\'s creation)'
        if isinstance(self.day_offset, bool) or not isinstance(self.day_offset, int):
            return "day_offset must be a whole number of days"
        if not 0 <= self.day_offset <= MAX_DAY_OFFSET_DAYS:
            return f"day_offset must be between 0 and {MAX_DAY_OFFSET_DAYS}"
        if self.within is not None:
            if self.day_offset:
                return "day_offset applies to by=, not to within="
            try:
                parse_duration(self.within)
            except ValueError:
                return f'within={self.within!r} is not a duration; use e.g. "90s", "10m" or "2h"'
            return None
        if not isinstance(self.by, str) or parse_time_of_day(self.by) is None:
            return f'by={self.by!r} is not a time of day; use "HH:MM" (24-hour), e.g. "06:00"'
        return None

    @property
    def within_seconds(self) -> float | None:
        return parse_duration(self.within) if self.within is not None else None

    def due_at(self, *, logical_date: datetime, created_at: datetime, timezone: str = "UTC") -> datetime:
        """When this deadline falls for a run, as an aware UTC datetime.

        ``logical_date`` and ``created_at`` are aware, or naive meaning UTC (the store's habit).
        """
        within = self.within_seconds
        if within is not None:
            return as_utc(created_at) + timedelta(seconds=within)
        assert self.by is not None  # _problem() guarantees one of the two
        at = parse_time_of_day(self.by)
        assert at is not None
        zone = zone_or_utc(timezone)
        local_day = as_utc(logical_date).astimezone(zone).date() + timedelta(days=self.day_offset)
        return datetime.combine(local_day, at, tzinfo=zone).astimezone(ZoneInfo("UTC"))

    # -- JSON (FlowSpec / StepSpec carry a plain dict) ------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.by is not None:
            return {"by": self.by, "day_offset": self.day_offset}
        return {"within_seconds": self.within_seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deadline:
        if data.get("by") is not None:
            return cls(by=str(data["by"]), day_offset=int(data.get("day_offset", 0)))
        return cls(within=float(data["within_seconds"]))


def parse_time_of_day(text: str) -> time | None:
    match = _TIME_OF_DAY_RE.match(text.strip())
    if not match:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def zone_or_utc(name: str | None) -> ZoneInfo:
    """The named zone; an unknown name falls back to UTC (the flow's own check reports it)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(ZoneInfo("UTC"))


def check_deadline(value: Any, who: str, where: dict[str, Any]) -> dict[str, Any] | None:
    """The DSL's check of a ``deadline=`` option: a :class:`Deadline` or None, as spec JSON."""
    if value is None:
        return None
    if not isinstance(value, Deadline):
        raise DefinitionError(
            f'{who}: deadline={value!r} must be a Deadline, e.g. Deadline(by="06:00") or Deadline(within="2h")',
            **where,
        )
    return value.to_dict()
