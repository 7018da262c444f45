"""Schedules in a time zone: DST policy, data intervals, catch-up, first interval, overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise

import pytest

from flowkit.errors import DefinitionError
from flowkit.schedules.options import schedule_options
from flowkit.schedules.planner import OverlapAction, due_intervals, overlap_action
from flowkit.schedules.timetable import Interval


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def ticks(cron: str, zone: str, after: datetime, n: int, **kw: str) -> list[datetime]:
    return list(islice(schedule_options("f", cron, timezone=zone, **kw).timetable().ticks_after(after), n))


# -- DST ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [("Europe/Berlin", utc(2026, 3, 27), utc(2026, 10, 23)), ("America/New_York", utc(2026, 3, 6), utc(2026, 10, 30))],
)
def test_daily_cron_runs_once_per_local_day_across_both_changes(zone: str, spring: datetime, fall: datetime) -> None:
    for start in (spring, fall):
        got = ticks("30 2 * * *", zone, start, 5)
        local_days = [
            t.astimezone(schedule_options("f", "* * * * *", timezone=zone).timetable().zone).date() for t in got
        ]
        assert len(set(local_days)) == 5
        assert all(timedelta(hours=22) <= b - a <= timedelta(hours=25) for a, b in pairwise(got))


def test_spring_forward_missing_time_shifts_to_first_valid_instant() -> None:
    # Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2)
    assert got == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_spring_forward_missing_time_can_be_skipped() -> None:
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 1, dst_missing="skip")
    assert got == [utc(2026, 3, 30, 0, 30)]


def test_shifted_tick_landing_on_a_real_tick_is_created_once() -> None:
    # New York 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC); hourly 02:00 shifts onto 03:00.
    got = ticks("0 * * * *", "America/New_York", utc(2026, 3, 8, 5, 30), 3)
    assert got == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_fall_back_repeated_time_runs_at_first_occurrence_by_default() -> None:
    # New York 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    got = ticks("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2)
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_fall_back_repeated_time_can_run_both() -> None:
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 3, dst_repeated="both")
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]


def test_ticks_until_is_the_mirror_of_ticks_after() -> None:
    timetable = schedule_options("f", "0 * * * *", timezone="Europe/Berlin").timetable()
    forward = list(islice(timetable.ticks_after(utc(2026, 10, 24, 22)), 8))
    backward = list(islice(timetable.ticks_until(forward[-1]), 8))
    assert backward == forward[::-1]


def test_data_interval_is_between_consecutive_ticks_and_logical_date_is_its_end() -> None:
    timetable = schedule_options("f", "0 2 * * *", timezone="Europe/Berlin").timetable()
    interval = timetable.latest_interval(utc(2026, 3, 30, 12))
    assert interval == Interval(utc(2026, 3, 29, 1), utc(2026, 3, 30, 0))
    assert interval.logical_date == utc(2026, 3, 30, 0)
    assert interval.end - interval.start == timedelta(hours=23)


# -- options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"dst_repeated": "last"}, "dst_repeated='last' is not one of first, both"),
        ({"dst_missing": "drop"}, "dst_missing='drop'"),
        ({"overlap": "queue"}, "overlap='queue' is not one of skip, buffer_one, buffer_all, cancel_other"),
        ({"max_catchup": 0}, "max_catchup must be a positive integer"),
        ({"start_date": utc(2026, 2, 1), "end_date": utc(2026, 1, 1)}, "is not after start_date"),
    ],
)
def test_bad_options_are_one_line_errors_naming_the_flow(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(DefinitionError) as err:
        schedule_options("nightly", "0 2 * * *", **options)
    assert fragment in str(err.value) and "'nightly'" in str(err.value) and "\n" not in str(err.value)


def test_bad_cron_is_refused() -> None:
    with pytest.raises(DefinitionError, match="not a valid cron expression"):
        schedule_options("nightly", "every day")


def test_naive_bounds_are_read_in_the_flow_zone() -> None:
    opts = schedule_options("f", "0 2 * * *", timezone="Europe/Berlin", start_date=datetime(2026, 1, 1))
    assert opts.start_date == utc(2025, 12, 31, 23)


# -- catch-up and the first interval ----------------------------------------------------------
HOURLY = "0 * * * *"


def test_new_flow_gets_only_its_newest_complete_interval() -> None:
    opts = schedule_options("f", HOURLY)
    assert due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=None) == [
        Interval(utc(2026, 5, 1, 9), utc(2026, 5, 1, 10))
    ]


def test_catchup_off_creates_only_the_latest_of_several_due() -> None:
    opts = schedule_options("f", HOURLY)
    got = due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=utc(2026, 5, 1, 4))
    assert got == [Interval(utc(2026, 5, 1, 9), utc(2026, 5, 1, 10))]


def test_nothing_is_due_twice() -> None:
    for catchup in (False, True):
        opts = schedule_options("f", HOURLY, catchup=catchup)
        assert due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=utc(2026, 5, 1, 10)) == []


def test_catchup_on_creates_every_missed_interval_oldest_first() -> None:
    opts = schedule_options("f", HOURLY, catchup=True)
    got = due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=utc(2026, 5, 1, 7))
    assert [i.end.hour for i in got] == [8, 9, 10]


def test_catchup_is_bounded_per_sweep_and_resumes_where_it_stopped() -> None:
    opts = schedule_options("f", HOURLY, catchup=True, max_catchup=4)
    now, last = utc(2026, 5, 1, 10, 20), utc(2026, 5, 1, 0)
    first = due_intervals(opts, now=now, last_logical=last)
    second = due_intervals(opts, now=now, last_logical=first[-1].end)
    third = due_intervals(opts, now=now, last_logical=second[-1].end)
    assert [i.end.hour for i in first + second + third] == list(range(1, 11))


def test_new_flow_with_catchup_starts_at_start_date() -> None:
    opts = schedule_options("f", HOURLY, catchup=True, start_date=utc(2026, 5, 1, 7, 30))
    got = due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=None)
    assert got == [Interval(utc(2026, 5, 1, 8), utc(2026, 5, 1, 9)), Interval(utc(2026, 5, 1, 9), utc(2026, 5, 1, 10))]


def test_start_date_in_the_future_creates_nothing_yet() -> None:
    opts = schedule_options("f", HOURLY, start_date=utc(2026, 6, 1))
    assert due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=None) == []


def test_end_date_bounds_intervals() -> None:
    opts = schedule_options("f", HOURLY, catchup=True, end_date=utc(2026, 5, 1, 9))
    got = due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=utc(2026, 5, 1, 7))
    assert [i.end.hour for i in got] == [8, 9]
    opts = schedule_options("f", HOURLY, end_date=utc(2026, 5, 1, 9))
    assert due_intervals(opts, now=utc(2026, 5, 1, 10, 20), last_logical=utc(2026, 5, 1, 7)) == []


def test_unpaused_flow_without_catchup_gets_the_latest_interval_only() -> None:
    opts = schedule_options("f", "0 2 * * *")
    got = due_intervals(opts, now=utc(2026, 5, 20, 12), last_logical=utc(2026, 5, 1, 2))
    assert got == [Interval(utc(2026, 5, 19, 2), utc(2026, 5, 20, 2))]


def test_changed_schedule_is_neither_skipped_nor_doubled() -> None:
    # Was hourly up to 10:00; now every 30 minutes: 10:30 is the first new interval.
    opts = schedule_options("f", "*/30 * * * *", catchup=True)
    got = due_intervals(opts, now=utc(2026, 5, 1, 10, 40), last_logical=utc(2026, 5, 1, 10))
    assert got == [Interval(utc(2026, 5, 1, 10), utc(2026, 5, 1, 10, 30))]
    assert due_intervals(opts, now=utc(2026, 5, 1, 10, 40), last_logical=got[-1].end) == []


# -- overlap ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "active", "buffered", "expected"),
    [
        ("skip", False, 0, OverlapAction.CREATE),
        ("skip", True, 0, OverlapAction.SKIP),
        ("buffer_one", True, 0, OverlapAction.BUFFER),
        ("buffer_one", True, 1, OverlapAction.SKIP),
        ("buffer_all", True, 5, OverlapAction.BUFFER),
        ("cancel_other", True, 0, OverlapAction.CANCEL_OTHER),
        ("cancel_other", False, 0, OverlapAction.CREATE),
        ("buffer_all", False, 2, OverlapAction.BUFFER),  # keep order behind runs already held
    ],
)
def test_overlap_policy(policy: str, active: bool, buffered: int, expected: OverlapAction) -> None:
    assert overlap_action(policy, previous_active=active, buffered=buffered) is expected
