"""The timeline of a run with a deadline: the deadline line with the slack, and the critical
path (by actual time) marked; runs without a deadline draw exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flowkit import Deadline, Flow
from flowkit.render.common import RunView
from flowkit.render.timeline import timeline_svg
from flowkit.sla.picture import deadline_picture

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def work(ctx):
    return 1


def diamond(**options):
    return (
        Flow("diamond", **options)
        .step("start", work)
        .step("wide", work, after="start")
        .step("spiky", work, after="start")
        .step("end", work, after=["wide", "spiky"])
        .spec(version="v1")
    )


def view(spec):
    spans = {"start": (0, 10), "wide": (10, 40), "spiky": (10, 90), "end": (90, 100)}
    attempts = {
        name: [
            {
                "number": 1,
                "state": "success",
                "dispatched_at": T0 + timedelta(seconds=a),
                "started_at": T0 + timedelta(seconds=a),
                "ended_at": T0 + timedelta(seconds=b),
            }
        ]
        for name, (a, b) in spans.items()
    }
    steps = {
        name: {"state": "success", "started_at": T0 + timedelta(seconds=a), "ended_at": T0 + timedelta(seconds=b)}
        for name, (a, b) in spans.items()
    }
    run = {
        "id": "r1",
        "state": "success",
        "created_at": T0,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=100),
        "logical_date": None,
    }
    return RunView(run=run, spec=spec, steps=steps, attempts=attempts)


def test_the_picture_has_the_deadline_the_slack_and_the_actual_critical_path():
    v = view(diamond(deadline=Deadline(within="2m")))
    picture = deadline_picture(v.spec, v.run, v.attempts, T0)
    assert picture is not None
    assert picture.deadline_at == T0 + timedelta(minutes=2)
    assert picture.slack_seconds == 20
    assert picture.critical_path == ("start", "spiky", "end")


def test_the_timeline_draws_the_deadline_and_marks_the_critical_path():
    svg = timeline_svg(view(diamond(deadline=Deadline(within="2m"))))
    assert svg.count('class="deadline"') == 2
    assert "deadline 2026-12-05 01:02:00 UTC \u00b7 slack 20.0s" in svg
    assert svg.count('class="critical-path"') == 3


def test_a_run_without_a_deadline_draws_no_deadline():
    svg = timeline_svg(view(diamond()))
    assert 'class="deadline"' not in svg and 'class="critical-path"' not in svg
