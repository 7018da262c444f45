"""A flow's schedule options, checked once where the flow is defined."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import DefinitionError
from .timetable import Timetable

DST_REPEATED = ("first", "both")
DST_MISSING = ("shift", "skip")
OVERLAP = ("skip", "buffer_one", "buffer_all", "cancel_other")


@dataclass(frozen=True)
class ScheduleOptions:
    cron: str
    timezone: str = "UTC"
    dst_repeated: str = "first"
    dst_missing: str = "shift"
    catchup: bool = False
    max_catchup: int = 32
    overlap: str = "skip"
    start_date: datetime | None = None
    end_date: datetime | None = None

    def timetable(self) -> Timetable:
        return Timetable(self.cron, ZoneInfo(self.timezone), self.dst_repeated, self.dst_missing)


def _choice(flow: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise DefinitionError(f"flow {flow!r}: {name}={value!r} is not one of {', '.join(allowed)}")


def _aware(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """A naive bound is read in the flow's zone; stored in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def schedule_options(flow: str, cron: str, **options: object) -> ScheduleOptions:
    """Validated options, or a one-line DefinitionError naming the flow and the fix."""
    if not croniter.is_valid(cron):
        raise DefinitionError(f"flow {flow!r}: schedule {cron!r} is not a valid cron expression")
    opts = ScheduleOptions(cron, **options)  # type: ignore[arg-type]
    try:
        zone = ZoneInfo(opts.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DefinitionError(
            f"flow {flow!r}: unknown timezone {opts.timezone!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None
    _choice(flow, "dst_repeated", opts.dst_repeated, DST_REPEATED)
    _choice(flow, "dst_missing", opts.dst_missing, DST_MISSING)
    _choice(flow, "overlap", opts.overlap, OVERLAP)
    if not isinstance(opts.max_catchup, int) or opts.max_catchup < 1:
        raise DefinitionError(f"flow {flow!r}: max_catchup must be a positive integer, not {opts.max_catchup!r}")
    start = _aware(opts.start_date, zone)
    end = _aware(opts.end_date, zone)
    if start and end and end <= start:
        raise DefinitionError(f"flow {flow!r}: end_date {end.isoformat()} is not after start_date {start.isoformat()}")
    return ScheduleOptions(
        cron,
        opts.timezone,
        opts.dst_repeated,
        opts.dst_missing,
        opts.catchup,
        opts.max_catchup,
        opts.overlap,
        start,
        end,
    )
