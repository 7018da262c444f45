"""A run's logical date and data interval, as a step sees them (ctx.logical_date...)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..spec import FlowSpec
from .options import ScheduleOptions


class RunInterval(NamedTuple):
    logical_date: datetime | None
    start: datetime | None
    end: datetime | None


def run_interval(spec: FlowSpec, run: Mapping[str, Any]) -> RunInterval:
    """A scheduled run's interval is [previous tick, logical date) of its pinned version's
    timetable; a manual run has no logical date and no interval (all None)."""
    logical = run.get("logical_date")
    if logical is None:
        return RunInterval(None, None, None)
    end = logical.astimezone(UTC) if logical.tzinfo else logical.replace(tzinfo=UTC)
    if not spec.schedule:
        return RunInterval(end, None, end)
    timetable = ScheduleOptions.from_dict(spec.schedule, spec.schedule_options).timetable()
    return RunInterval(end, timetable.interval_ending(end).start, end)
