"""Deadlines, duration statistics, critical-path prediction and the SLA decisions (fake clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowkit.errors import DefinitionError
from flowkit.sla.deadline import Deadline
from flowkit.sla.history import MIN_HISTORY_RUNS, StepStats, percentile
from flowkit.sla.predict import NoPrediction, Prediction, StepProgress, predict_finish
from flowkit.sla.watch import SLA_AT_RISK, SLA_MISSED, missed_scheduled_runs, sla_events

T0 = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)

# A diamond whose obvious long branch is not the critical path: "wide" has the bigger
# median, but "spiky" has the bigger p90, and p90 is what prediction uses.
DIAMOND = {"start": (), "wide": ("start",), "spiky": ("start",), "end": ("wide", "spiky")}


def stats(*durations: float, wait: float = 0.0) -> StepStats:
    return StepStats.from_samples((d, wait) for d in durations)


def diamond_history() -> dict[str, StepStats]:
    return {
        "start": stats(*[10.0] * 20),
        "wide": stats(*[100.0] * 20),
        "spiky": stats(*([20.0] * 16 + [400.0] * 4)),
        "end": stats(*[5.0] * 20, wait=1.0),
    }


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 90) == pytest.approx(9.0)


def test_the_window_keeps_the_last_runs_only():
    s = stats(*range(1, 31))
    assert len(s.durations) == 20 and s.durations[0] == 11


def test_diamond_critical_path_follows_the_p90_not_the_median():
    p = predict_finish(DIAMOND, {}, diamond_history(), T0)
    assert isinstance(p, Prediction)
    assert p.critical_path == ("start", "spiky", "end")
    # spiky p90 over 16x20 + 4x400: rank 17.1 -> 20 + 0.1*0 .. interpolated between 400s
    spiky = percentile([20.0] * 16 + [400.0] * 4, 90)
    assert p.finish_at == T0 + timedelta(seconds=10 + spiky + 5 + 1)
    assert p.slack_seconds(T0 + timedelta(hours=1)) == pytest.approx(3600 - (16 + spiky))


def test_running_and_done_steps_weigh_what_remains():
    progress = {"start": StepProgress("success"), "spiky": StepProgress("running", elapsed_seconds=300)}
    p = predict_finish(DIAMOND, progress, diamond_history(), T0)
    assert isinstance(p, Prediction)
    assert p.critical_path == ("spiky", "end") or p.critical_path == ("wide", "end")
    spiky_left = percentile([20.0] * 16 + [400.0] * 4, 90) - 300
    assert p.finish_at == T0 + timedelta(seconds=max(100.0, spiky_left) + 6)


def test_no_prediction_below_the_minimum_history():
    history = diamond_history()
    history["wide"] = stats(*[100.0] * (MIN_HISTORY_RUNS - 1))
    p = predict_finish(DIAMOND, {}, history, T0)
    assert isinstance(p, NoPrediction)
    assert p.steps_without_history == ("wide",)
    assert "no prediction" in p.reason
    # a finished step needs no history
    assert isinstance(predict_finish(DIAMOND, {"wide": StepProgress("success")}, history, T0), Prediction)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one of"),
        ({"by": "06:00", "within": "2h"}, "exactly one of"),
        ({"by": "25:00"}, "not a time of day"),
        ({"by": "6am"}, "not a time of day"),
        ({"within": "soon"}, "not a duration"),
        ({"within": "2h", "day_offset": 1}, "day_offset applies to by="),
        ({"by": "06:00", "day_offset": -1}, "between 0 and"),
    ],
)
def test_bad_deadlines_are_one_line_errors(kwargs, fragment):
    with pytest.raises(DefinitionError, match=fragment) as err:
        Deadline(**kwargs)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{__file__}:")  # where the bad Deadline was written


def test_deadline_due_at():
    logical = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    created = datetime(2026, 12, 5, 0, 30)  # naive means UTC
    assert Deadline(by="06:00").due_at(logical_date=logical, created_at=created) == logical.replace(hour=6)
    assert Deadline(by="06:00", day_offset=1).due_at(logical_date=logical, created_at=created) == datetime(
        2026, 12, 6, 6, tzinfo=UTC
    )
    assert Deadline(by="06:00").due_at(logical_date=logical, created_at=created, timezone="Europe/Paris") == datetime(
        2026, 12, 5, 5, tzinfo=UTC
    )
    assert Deadline(within="2h").due_at(logical_date=logical, created_at=created) == datetime(
        2026, 12, 5, 2, 30, tzinfo=UTC
    )
    for d in (Deadline(by="06:00", day_offset=2), Deadline(within="90s")):
        assert Deadline.from_dict(d.to_dict()).to_dict() == d.to_dict()


class FakeSweep:
    """A scheduler's SLA sweep reduced to its decisions: the raised set stands for the store's record."""

    def __init__(self) -> None:
        self.raised: list[tuple[datetime, str]] = []

    def check(self, deadline_at, prediction, now, finished=False):
        already = frozenset(action for _, action in self.raised)
        for event in sla_events(deadline_at, prediction, now, finished=finished, already=already):
            self.raised.append((now, event.action))


def test_at_risk_once_before_the_deadline_then_missed_once_at_it():
    deadline_at = T0 + timedelta(minutes=10)
    sweep = FakeSweep()
    late = Prediction(T0 + timedelta(minutes=12), ("a",), (720.0,))
    on_time = Prediction(T0 + timedelta(minutes=9), ("a",), (540.0,))
    sweep.check(deadline_at, on_time, T0)
    assert sweep.raised == []
    for minute in (1, 2, 3):
        sweep.check(deadline_at, late, T0 + timedelta(minutes=minute))
    assert sweep.raised == [(T0 + timedelta(minutes=1), SLA_AT_RISK)]
    sweep.check(deadline_at, late, deadline_at - timedelta(seconds=1))
    sweep.check(deadline_at, late, deadline_at)
    sweep.check(deadline_at, late, deadline_at + timedelta(minutes=5))
    assert [a for _, a in sweep.raised] == [SLA_AT_RISK, SLA_MISSED]
    assert sweep.raised[1][0] == deadline_at


def test_a_finished_run_raises_nothing():
    assert sla_events(T0, None, T0 + timedelta(hours=1), finished=True) == []


def test_a_step_deadline_counts_from_the_run_creation():
    created = T0
    step_due = Deadline(within="10m").due_at(logical_date=T0, created_at=created)
    events = sla_events(step_due, None, T0 + timedelta(minutes=10), finished=False, subject='step "load"')
    assert [e.action for e in events] == [SLA_MISSED]
    assert 'step "load"' in events[0].reason


def test_a_scheduled_run_that_never_started_is_missed():
    deadline = Deadline(by="06:00")
    now = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
    missed = missed_scheduled_runs("0 0 * * *", deadline, now, has_run=set())
    assert missed == [
        datetime(2026, 12, 4, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 0, 0, tzinfo=UTC),
    ]
    assert missed_scheduled_runs("0 0 * * *", deadline, now, has_run=set(missed)) == []
    assert missed_scheduled_runs("0 0 * * *", deadline, now.replace(hour=5), has_run={missed[0]}) == []
    assert missed_scheduled_runs("0 0 * * *", Deadline(within="1h"), now, has_run=set()) == []


def test_a_missed_scheduled_run_follows_the_flows_time_zone():
    # 02:00 Berlin each day (01:00 UTC in winter), due by 06:00 Berlin (05:00 UTC)
    options = {"timezone": "Europe/Berlin"}
    deadline = Deadline(by="06:00")
    now = datetime(2026, 12, 5, 5, 30, tzinfo=UTC)
    missed = missed_scheduled_runs(
        "0 2 * * *", deadline, now, has_run=set(), timezone="Europe/Berlin", schedule_options=options
    )
    assert missed[-1] == datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    # half an hour earlier (05:00 UTC is 06:00 Berlin) today's interval is not missed yet
    earlier = now - timedelta(minutes=31)
    assert datetime(2026, 12, 5, 1, 0, tzinfo=UTC) not in missed_scheduled_runs(
        "0 2 * * *", deadline, earlier, has_run=set(), timezone="Europe/Berlin", schedule_options=options
    )


def test_at_risk_raised_with_80_percent_of_the_time_left_once_the_overrun_shows():
    """Three steps a -> b -> c, 60 s each over 20 runs, the deadline 20% above that.
    b is slowed 5x. The overrun becomes observable when b passes its p90 (t=120 s); a sweep
    every 5 s must raise at-risk with >= 80% of the time then left before the deadline."""
    chain = {"a": (), "b": ("a",), "c": ("b",)}
    history = {name: stats(*[60.0] * 20) for name in chain}
    deadline_at = T0 + timedelta(seconds=180 * 1.2)
    actual = {"a": 60.0, "b": 300.0, "c": 60.0}
    sweep = FakeSweep()
    now, started, done = T0, T0, set()
    while now < deadline_at and not sweep.raised:
        current = next(n for n in chain if n not in done)
        if (now - started).total_seconds() >= actual[current]:
            done.add(current)
            started = now
            continue
        progress = {n: StepProgress("success") for n in done}
        progress[current] = StepProgress("running", elapsed_seconds=(now - started).total_seconds())
        sweep.check(deadline_at, predict_finish(chain, progress, history, now), now)
        now += timedelta(seconds=5)
    [(raised_at, action)] = sweep.raised
    assert action == SLA_AT_RISK
    observable_at = T0 + timedelta(seconds=120)
    lead = (deadline_at - raised_at).total_seconds() / (deadline_at - observable_at).total_seconds()
    print(f"sla_at_risk lead: {lead:.0%} of the time left once the overrun shows")
    assert lead >= 0.8, lead
