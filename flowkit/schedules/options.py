"""A flow's schedule options, checked once where the flow is defined."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import DefinitionError
from .timetable import Timetable

DST_REPEATED = ("first", "both")
DST_MISSING = ("shift", "skip")
OVERLAP = ("skip", "buffer_one", "buffer_all", "cancel_other")


class ScheduleKeywords(TypedDict, total=False):
    """The Flow(...) keywords that shape its schedule (see ScheduleOptions)."""

    timezone: str
    dst_repeated: str
    dst_missing: str
    catchup: bool
    max_catchup: int
    overlap: str
    start_date: datetime | None
    end_date: datetime | None


@dataclass(frozen=True)
class ScheduleOptions:
    cron: str
    timezone: str = "UTC"
    dst_repeated: str = "first"
    dst_missing: str = "shift"
    catchup: bool = False
    max_catchup: int = 32
    overlap: str = "buffer_all"  # why: flowkit/schedules/overlap.py DEFAULT_OVERLAP
    start_date: datetime | None = None
    end_date: datetime | None = None

    def timetable(self) -> Timetable:
        return Timetable(self.cron, ZoneInfo(self.timezone), self.dst_repeated, self.dst_missing)

    def to_dict(self) -> dict[str, Any]:
        """What FlowSpec.schedule_options stores (JSON-safe; the cron lives in FlowSpec.schedule)."""
        data = {k: v for k, v in asdict(self).items() if k != "cron"}
        for key in ("start_date", "end_date"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_dict(cls, cron: str, data: dict[str, Any] | None) -> ScheduleOptions:
        """The inverse of to_dict; a spec stored before these options existed gets the defaults."""
        data = dict(data or {})
        for key in ("start_date", "end_date"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(cron, **data)


def _choice(flow: str, name: str, value: str, allowed: tuple[str, ...], where: dict[str, Any]) -> None:
    if value not in allowed:
        raise DefinitionError(f"flow {flow!r}: {name}={value!r} is not one of {', '.join(allowed)}", **where)


def _aware(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """A naive bound is read in the flow's zone; stored in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def schedule_options(flow: str, cron: str, *, where: dict[str, Any] | None = None, **options: Any) -> ScheduleOptions:
    """Validated options, or a one-line DefinitionError naming the flow and the fix
    (`where`: the DefinitionError location keywords, path and lineno of the flow)."""
    where = where or {}
    if not croniter.is_valid(cron):
        raise DefinitionError(f"flow {flow!r}: schedule {cron!r} is not a valid cron expression", **where)
    opts = ScheduleOptions(cron, **options)
    try:
        zone = ZoneInfo(opts.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DefinitionError(
            f"flow {flow!r}: unknown timezone {opts.timezone!r}; use an IANA name such as 'Europe/Berlin'", **where
        ) from None
    _choice(flow, "dst_repeated", opts.dst_repeated, DST_REPEATED, where)
    _choice(flow, "dst_missing", opts.dst_missing, DST_MISSING, where)
    _choice(flow, "overlap", opts.overlap, OVERLAP, where)
    if not isinstance(opts.max_catchup, int) or opts.max_catchup < 1:
        raise DefinitionError(
            f"flow {flow!r}: max_catchup must be a positive integer, not {opts.max_catchup!r}", **where
        )
    start = _aware(opts.start_date, zone)
    end = _aware(opts.end_date, zone)
    if start and end and end <= start:
        raise DefinitionError(
            f"flow {flow!r}: end_date {end.isoformat()} is not after start_date {start.isoformat()}", **where
        )
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


def checked_options(
    flow: str, cron: str | None, options: dict[str, Any], where: dict[str, Any]
) -> dict[str, Any] | None:
    """The Flow(...) keywords beyond the cron, checked; None when the flow has no schedule."""
    allowed = [k for k in ScheduleOptions.__dataclass_fields__ if k != "cron"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DefinitionError(
            f"flow {flow!r}: unknown option {unknown[0]!r}; schedule options are {', '.join(allowed)}", **where
        )
    if cron is None:
        if options:
            raise DefinitionError(f"flow {flow!r}: {sorted(options)[0]}= needs schedule=", **where)
        return None
    return schedule_options(flow, cron, where=where, **options).to_dict()
