"""The scheduler's sweep creates scheduled runs from flowkit/schedules on both backends:
time zone and DST, catch-up bounded per sweep, the first interval, and a restart or a
second scheduler creating nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowkit.errors import DefinitionError
from flowkit.spec import FlowSpec
from flowkit.testing import FakeClock

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "schedules")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def logical_dates(store, flow: str) -> list[datetime]:  # type: ignore[no-untyped-def]
    runs = [r for r in store.list_runs(flow) if r["trigger"] == "schedule"]
    return sorted(r["logical_date"].astimezone(UTC) for r in runs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utc(2026, 3, 30, 12))


@pytest.fixture
def h(backend_store, clock):  # type: ignore[no-untyped-def]
    return inline_harness(backend_store, DAGS, clock=clock)


def test_catchup_across_spring_forward_is_bounded_per_sweep_and_never_doubled(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    # start_date 2026-03-26 00:00 Berlin: the first interval starts at the 26th's 02:30.
    assert logical_dates(h.store, "berlin_daily") == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1),
    ]
    h.scheduler.schedule_cron(clock())
    # 2026-03-29 02:30 does not exist in Berlin: it ran at 03:00 CEST (01:00 UTC), once.
    assert logical_dates(h.store, "berlin_daily")[3:] == [utc(2026, 3, 30, 0, 30)]
    h.scheduler.schedule_cron(clock())
    assert len(logical_dates(h.store, "berlin_daily")) == 4


def test_without_catchup_only_the_newest_interval_is_created_then_the_next_when_due(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    assert logical_dates(h.store, "hourly_latest") == [utc(2026, 3, 30, 12)]
    clock.advance(3 * 3600 + 60)
    h.scheduler.schedule_cron(clock())
    assert logical_dates(h.store, "hourly_latest") == [utc(2026, 3, 30, 12), utc(2026, 3, 30, 15)]


def test_a_restarted_or_second_scheduler_creates_nothing_twice(h, backend_store, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    before = {f: logical_dates(h.store, f) for f in ("berlin_daily", "hourly_latest")}
    second = inline_harness(backend_store, DAGS, clock=clock)
    # The second scheduler sees the same state; the unique (flow, logical_date) is the guard
    # when both compute the same interval at once: create_run returns None, nothing raises.
    spec = backend_store.flow_spec("hourly_latest")
    assert backend_store.create_run(spec, {}, actor="t", trigger="schedule", logical_date=utc(2026, 3, 30, 12)) is None
    second.scheduler.schedule_cron(clock())
    assert logical_dates(backend_store, "hourly_latest") == before["hourly_latest"]
    assert logical_dates(backend_store, "berlin_daily")[:3] == before["berlin_daily"]


def test_schedule_options_survive_the_spec_round_trip() -> None:
    from flowkit import Flow

    spec = Flow("f", schedule="0 2 * * *", timezone="America/New_York", catchup=True).step("a", print).spec()
    again = FlowSpec.from_json(spec.to_json())
    assert again.schedule_options == spec.schedule_options
    assert again.schedule_options is not None and again.schedule_options["timezone"] == "America/New_York"


def test_unknown_timezone_names_the_flow_and_its_line() -> None:
    from flowkit import Flow

    with pytest.raises(DefinitionError) as err:
        Flow("f", schedule="0 2 * * *", timezone="Europe/Berlinn")
    text = str(err.value)
    assert "test_schedule_sweep.py:" in text and "unknown timezone 'Europe/Berlinn'" in text and "\n" not in text


def test_schedule_options_without_a_schedule_are_refused() -> None:
    from flowkit import Flow

    with pytest.raises(DefinitionError, match="timezone= needs schedule="):
        Flow("f", timezone="Europe/Berlin")


def test_a_step_sees_its_logical_date_and_data_interval(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    (run,) = [r for r in h.store.list_runs("hourly_latest") if r["trigger"] == "schedule"]
    assert h.run_until_done(run["id"]) == "success"
    assert h.store.results(run["id"])["only"] == [
        "2026-03-30T12:00:00+00:00",
        "2026-03-30T11:00:00+00:00",
        "2026-03-30T12:00:00+00:00",
    ]
    manual = h.trigger("hourly_latest")
    assert h.run_until_done(manual) == "success"
    assert h.store.results(manual)["only"] == [None, None, None]


def test_one_flow_with_bad_stored_options_does_not_stop_the_others(h, clock) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    flow = next(f for f in h.store.list_flows() if f["name"] == "berlin_daily")
    spec = h.scheduler.spec(flow["name"], flow["version"])
    # As if a stored version held options this code cannot read (a zone removed from tzdata).
    h.scheduler._specs[(flow["name"], flow["version"])] = replace(spec, schedule_options={"timezone": "Gone/Zone"})
    h.scheduler.schedule_cron(clock())
    assert logical_dates(h.store, "berlin_daily") == []
    assert logical_dates(h.store, "hourly_latest") == [utc(2026, 3, 30, 12)]
