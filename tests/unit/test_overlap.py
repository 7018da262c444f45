"""overlap= applied by the sweep, on both backends with an injected clock: a due scheduled
run whose previous scheduled run is still going is skipped (audited, once), buffered (held
queued by the run-start rule until the previous ends), or cancels the other."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowkit.testing import FakeClock

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "overlap")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utc(2026, 3, 30, 12, 5))


@pytest.fixture
def h(backend_store, clock):  # type: ignore[no-untyped-def]
    return inline_harness(backend_store, DAGS, clock=clock)


def states(h: Any, flow: str) -> list[tuple[int, str]]:
    runs = sorted(h.store.list_runs(flow), key=lambda r: r["logical_date"])
    return [(r["logical_date"].hour, r["state"]) for r in runs]


def next_hour(h: Any, clock: FakeClock) -> None:
    """An hour later the sweep finds the next interval due; no attempt was worked."""
    clock.advance(3600)
    h.scheduler.schedule_cron(clock())


def test_skip_drops_the_interval_once_and_audits_it(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    assert states(h, "ov_skip") == [(12, "running")]
    next_hour(h, clock)
    h.scheduler.schedule_cron(clock())  # a second sweep of the same hour skips nothing more
    assert states(h, "ov_skip") == [(12, "running")]
    skipped = [e for e in h.store.events() if e["action"] == "schedule_skipped" and e["flow_name"] == "ov_skip"]
    assert len(skipped) == 1
    assert "interval 2026-03-30T12:00:00+00:00 .. 2026-03-30T13:00:00+00:00 skipped" in skipped[0]["reason"]
    assert "overlap=skip" in skipped[0]["reason"]
    # Once the previous run ended, the next due interval gets its run
    h.work()
    next_hour(h, clock)
    assert states(h, "ov_skip") == [(12, "success"), (14, "running")]


def test_buffer_one_holds_one_run_and_skips_the_rest(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    next_hour(h, clock)
    next_hour(h, clock)
    assert states(h, "ov_buffer_one") == [(12, "running"), (13, "queued")]
    assert any(e["action"] == "schedule_skipped" and e["flow_name"] == "ov_buffer_one" for e in h.store.events())
    # The held run starts when the previous one ends
    h.work()
    h.work()
    assert states(h, "ov_buffer_one") == [(12, "success"), (13, "success")]


@pytest.mark.parametrize("flow", ["ov_buffer_all", "ov_default"])
def test_buffer_all_holds_every_run_and_starts_them_in_order(h, clock, flow) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    next_hour(h, clock)
    next_hour(h, clock)
    assert states(h, flow) == [(12, "running"), (13, "queued"), (14, "queued")]
    h.scheduler.sweep()  # the run-start rule holds them at every sweep, not only at creation
    assert states(h, flow) == [(12, "running"), (13, "queued"), (14, "queued")]
    # One ends: the oldest held one starts (only it)
    from flowkit.execution.attempt import run_attempt

    first = min(h.store.list_runs(flow), key=lambda r: r["logical_date"])
    done = next(d for d in h.dispatcher.sent if d.run_id == first["id"])
    h.dispatcher.sent.remove(done)

    run_attempt(h.runtime, done.run_id, done.step.name, done.attempt)
    h.scheduler.handle(h.events.wait(0))
    assert states(h, flow) == [(12, "success"), (13, "running"), (14, "queued")]
    h.work()
    assert states(h, flow) == [(12, "success"), (13, "success"), (14, "success")]


def test_cancel_other_cancels_the_going_run_through_the_operator_path(h, clock) -> None:  # type: ignore[no-untyped-def]
    h.scheduler.schedule_cron(clock())
    (first,) = h.store.list_runs("ov_cancel_other")
    next_hour(h, clock)
    assert states(h, "ov_cancel_other") == [(12, "cancelled"), (13, "running")]
    cancel = [e for e in h.store.events(first["id"]) if e["action"] == "operator_cancel"]
    assert (
        len(cancel) == 1
        and "overlap=cancel_other: interval ending 2026-03-30T13:00:00+00:00 is due" in cancel[0]["reason"]
    )
    # its queued attempt's message was revoked: the worker never runs it
    assert all(d.run_id != first["id"] for d in h.dispatcher.sent)
    h.work()
    assert states(h, "ov_cancel_other") == [(12, "cancelled"), (13, "success")]
