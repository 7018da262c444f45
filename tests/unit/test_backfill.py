"""Backfills on both backends with an injected clock: lazy creation under the backfill's own
cap, its lane beside the flow's scheduled runs, reprocess choices, backwards, pause and
cancel, the done event, and one-line errors for bad input."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowkit.backfill.plan import Action, BackfillError
from flowkit.errors import NotFoundError
from flowkit.store import backfill_ops as bo
from flowkit.store import tables as t
from flowkit.testing import FakeClock

from ..store_backends import inline_harness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "backfill")
FLOW = "hourly_bf"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utc(2026, 3, 30, 12))


@pytest.fixture
def h(backend_store, clock, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BACKFILL_FAIL_HOURS", raising=False)
    return inline_harness(backend_store, DAGS, clock=clock)


def backfill_runs(store: Any, backfill_id: int) -> list[dict[str, Any]]:
    return [r for r in store.list_runs(FLOW, limit=10_000) if r["backfill_id"] == backfill_id]


def active(store: Any, backfill_id: int) -> int:
    return sum(r["state"] in ("queued", "running") for r in backfill_runs(store, backfill_id))


def drive(h: Any, clock: FakeClock, backfill_id: int, cap: int, rounds: int = 100) -> None:
    """Sweep and work until the backfill ends, checking its cap and lazy creation throughout."""
    for _ in range(rounds):
        h.scheduler.advance_backfills(clock())
        bf = bo.get_backfill(h.store, backfill_id)
        assert active(h.store, backfill_id) <= cap
        assert len(backfill_runs(h.store, backfill_id)) <= bf["handed"] <= bf["total"]
        if bf["state"] != "running":
            return
        h.work()
    raise AssertionError(f"backfill {backfill_id} did not end")


def one_run_per_interval(store: Any) -> None:
    counts = Counter(r["logical_date"] for r in store.list_runs(FLOW, limit=10_000) if r["logical_date"])
    assert counts and max(counts.values()) == 1


def test_runs_are_created_lazily_within_the_cap_and_all_succeed(h, clock) -> None:  # type: ignore[no-untyped-def]
    # Given a backfill of a day of hourly intervals, at most 3 at once
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-30", max_active_runs=3, by="ann", now=clock())
    # Then nothing is created up front
    assert bo.get_backfill(h.store, bf)["total"] == 24 and backfill_runs(h.store, bf) == []
    # When the scheduler sweeps: the first 3 are created and started, not more
    h.scheduler.advance_backfills(clock())
    runs = backfill_runs(h.store, bf)
    assert len(runs) == 3 and {r["state"] for r in runs} == {"running"}
    assert {r["trigger"] for r in runs} == {"backfill"}
    drive(h, clock, bf, cap=3)
    runs = backfill_runs(h.store, bf)
    assert len(runs) == 24 and {r["state"] for r in runs} == {"success"}
    assert sorted(r["logical_date"] for r in runs) == [utc(2026, 3, 29, hour) for hour in range(1, 24)] + [
        utc(2026, 3, 30)
    ]
    # A backfill run sees its logical date and data interval as a scheduled run would
    first = min(runs, key=lambda r: r["logical_date"])
    assert h.store.results(first["id"])["extract"] == [
        "2026-03-29T01:00:00+00:00",
        "2026-03-29T00:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
    ]
    # Then it is done, with one backfill_done audit event and its notification row
    assert bo.get_backfill(h.store, bf)["state"] == "done"
    done = [e for e in h.store.events() if e["action"] == "backfill_done"]
    assert len(done) == 1 and done[0]["flow_name"] == FLOW and "24 succeeded" in done[0]["reason"]
    with h.store._conn() as conn:
        kinds = [r.kind for r in conn.execute(select(t.notification_outbox.c.kind))]
    assert kinds.count("backfill_done") == 1
    p = bo.progress(h.store, bf)
    assert (p["done"], p["running"], p["failed"], p["left"]) == (24, 0, 0, 0)


def test_a_sweep_looks_at_a_bounded_number_of_intervals(h, clock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given a month of hourly intervals that all keep their runs would be a long scan: a
    # pass looks at no more than SCAN_PER_PASS of them
    monkeypatch.setattr(bo, "SCAN_PER_PASS", 5)
    bf = bo.create_backfill(h.store, FLOW, "2026-02-01", "2026-03-01", max_active_runs=50, by="ann", now=clock())
    assert bo.get_backfill(h.store, bf)["total"] == 28 * 24
    bo.advance_backfills(h.store, "t", clock())
    assert bo.get_backfill(h.store, bf)["handed"] == 5 and len(backfill_runs(h.store, bf)) == 5


def test_the_backfill_lane_runs_beside_the_flows_own_runs(h, clock) -> None:  # type: ignore[no-untyped-def]
    # Given the flow's own lane is full (max_active_runs=1: its scheduled run is running)
    h.scheduler.schedule_cron(clock())
    (scheduled,) = [r for r in h.store.list_runs(FLOW) if r["trigger"] == "schedule"]
    assert h.store.get_run(scheduled["id"])["state"] == "running"
    # When a backfill with a cap of 2 starts, its runs start anyway (not starved)
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-29T06:00", max_active_runs=2, by="ann", now=clock())
    h.scheduler.advance_backfills(clock())
    assert [r["state"] for r in backfill_runs(h.store, bf)] == ["running", "running"]
    # And a manual run waits for the flow's lane only, never for the backfill's
    manual = h.store.create_run(h.store.flow_spec(FLOW), {}, actor="t")
    h.scheduler.start_run(manual)
    assert h.store.get_run(manual)["state"] == "queued"
    clock.advance(3600)
    h.scheduler.schedule_cron(clock())  # the next scheduled interval is created (buffered)
    drive(h, clock, bf, cap=2)
    # Then the flow's own runs went on while the backfill ran, and ended
    own = [r for r in h.store.list_runs(FLOW) if r["backfill_id"] is None]
    h.work()
    for r in own:
        assert h.run_until_done(r["id"]) == "success"
    one_run_per_interval(h.store)


def _existing(h: Any, hour: int, *, finish: bool = True) -> str:
    spec = h.store.flow_spec(FLOW)
    run_id = h.store.create_run(spec, {}, actor="t", trigger="schedule", logical_date=utc(2026, 3, 29, hour))
    h.scheduler.start_run(run_id)
    if finish:
        h.run_until_done(run_id)
    else:  # still running: its attempt's message is never worked
        h.dispatcher.sent = [d for d in h.dispatcher.sent if d.run_id != run_id]
    return str(run_id)


@pytest.mark.parametrize(
    ("reprocess", "rerun"),
    [("none", set()), ("failed", {3}), ("all", {2, 3})],
)
def test_reprocess_choices_and_a_live_run_is_always_left_alone(h, clock, monkeypatch, reprocess, rerun) -> None:  # type: ignore[no-untyped-def]
    # Given intervals 02:00 succeeded, 03:00 failed, 04:00 still running
    ok = _existing(h, 2)
    monkeypatch.setenv("BACKFILL_FAIL_HOURS", "3")
    bad = _existing(h, 3)
    monkeypatch.delenv("BACKFILL_FAIL_HOURS")
    live = _existing(h, 4, finish=False)
    assert [h.store.get_run(r)["state"] for r in (ok, bad, live)] == ["success", "failed", "running"]
    # Then the dry run says what the backfill will do with each, and creates nothing
    spec, lo, hi, total = bo.plan_backfill(h.store, FLOW, "2026-03-29T00:00", "2026-03-29T06:00", now=clock())
    planned = bo.dry_run(h.store, spec, lo, hi, reprocess=reprocess, backwards=False)
    actions = {p.interval.end.hour: p.decision.action for p in planned}
    assert total == 6 and actions[1] is Action.CREATE and actions[4] is Action.LEAVE
    assert {hour for hour, a in actions.items() if a is Action.RERUN} == rerun
    # When it runs
    bf = bo.create_backfill(
        h.store,
        FLOW,
        "2026-03-29T00:00",
        "2026-03-29T06:00",
        reprocess=reprocess,
        max_active_runs=2,
        by="ann",
        now=clock(),
    )
    drive(h, clock, bf, cap=2)
    # Then the re-run intervals ran again in their own run (attempts go on), the rest kept theirs
    one_run_per_interval(h.store)
    by_hour = {r["logical_date"].hour: r for r in h.store.list_runs(FLOW, limit=100) if r["logical_date"]}
    assert {hour for hour, r in by_hour.items() if r["backfill_id"] == bf} == {1, 5, 6} | rerun
    assert h.store.get_run(live)["state"] == "running" and by_hour[4]["backfill_id"] is None
    assert by_hour[3]["state"] == ("success" if 3 in rerun else "failed")
    extract_attempts = [a for a in h.store.attempts(bad) if a["step"] == "extract"]
    assert len(extract_attempts) == (2 if 3 in rerun else 1)
    p = bo.progress(h.store, bf)
    assert p["kept"] == 3 - len(rerun) and p["done"] == 3 + len(rerun) and p["left"] == 0


def test_backwards_takes_the_newest_interval_first(h, clock) -> None:  # type: ignore[no-untyped-def]
    bf = bo.create_backfill(
        h.store, FLOW, "2026-03-29", "2026-03-29T04:00", max_active_runs=1, backwards=True, by="ann", now=clock()
    )
    drive(h, clock, bf, cap=1)
    runs = sorted(backfill_runs(h.store, bf), key=lambda r: r["created_at"])
    assert [r["logical_date"].hour for r in runs] == [4, 3, 2, 1]


def test_pause_holds_and_unpause_goes_on(h, clock) -> None:  # type: ignore[no-untyped-def]
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-29T06:00", max_active_runs=2, by="ann", now=clock())
    h.scheduler.advance_backfills(clock())
    bo.pause_backfill(h.store, bf, by="ann", reason="db maintenance")
    h.work()  # its two running runs go on and end
    h.scheduler.advance_backfills(clock())
    assert [r["state"] for r in backfill_runs(h.store, bf)] == ["success", "success"]
    assert bo.get_backfill(h.store, bf)["handed"] == 2
    with pytest.raises(Exception, match="is paused; only a running one can be paused"):
        bo.pause_backfill(h.store, bf, by="ann")
    bo.unpause_backfill(h.store, bf, by="ann")
    drive(h, clock, bf, cap=2)
    assert len(backfill_runs(h.store, bf)) == 6
    actions = [e["action"] for e in h.store.events() if e["action"].startswith("backfill_")]
    assert actions == ["backfill_created", "backfill_paused", "backfill_running", "backfill_done"]


def test_cancel_creates_nothing_more_cancels_queued_runs_and_lets_running_ones_finish(h, clock) -> None:  # type: ignore[no-untyped-def]
    # Given a backfill with 2 runs running
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-29T06:00", max_active_runs=2, by="ann", now=clock())
    h.scheduler.advance_backfills(clock())
    # When it is cancelled
    summary, _ = bo.cancel_backfill(h.store, bf, by="ann", reason="wrong range")
    assert summary == f"backfill {bf}: cancelled; 0 queued run(s) cancelled, 2 running run(s) left to finish"
    # Then its running runs finish, and no sweep creates another
    h.work()
    for _ in range(3):
        h.scheduler.advance_backfills(clock())
        h.scheduler.sweep()
    assert [r["state"] for r in backfill_runs(h.store, bf)] == ["success", "success"]
    assert bo.get_backfill(h.store, bf)["state"] == "cancelled"
    # And a backfill cancelled with runs created but not started cancels them
    other = bo.create_backfill(
        h.store, FLOW, "2026-03-28", "2026-03-28T03:00", max_active_runs=3, by="ann", now=clock()
    )
    bo.advance_backfills(h.store, "t", clock())  # created, not started yet
    assert [r["state"] for r in backfill_runs(h.store, other)] == ["queued"] * 3
    summary, _ = bo.cancel_backfill(h.store, other, by="ann")
    assert "3 queued run(s) cancelled, 0 running" in summary
    h.scheduler.advance_backfills(clock())
    assert [r["state"] for r in backfill_runs(h.store, other)] == ["cancelled"] * 3


def test_show_estimates_the_finish_from_the_runs_so_far(h, clock) -> None:  # type: ignore[no-untyped-def]
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-29T10:00", max_active_runs=2, by="ann", now=clock())
    assert bo.progress(h.store, bf, clock())["estimated_finish"] is None  # nothing ended yet
    h.scheduler.advance_backfills(clock())
    bo.pause_backfill(h.store, bf, by="ann")  # its 2 running runs end, no more start
    h.work()
    p = bo.progress(h.store, bf, clock())
    assert (p["done"], p["running"], p["left"]) == (2, 0, 8)
    assert p["estimated_finish"] is not None


@pytest.mark.parametrize(
    ("flow", "start", "end", "fragment"),
    [
        ("hourly_bff", "2026-03-29", "2026-03-30", 'no flow named "hourly_bff". Did you mean "hourly_bf"?'),
        ("manual_only", "2026-03-29", "2026-03-30", 'flow "manual_only" has no schedule='),
        (FLOW, "2026-03-30", "2026-03-29", "is not after --start"),
        (FLOW, "2026-13-01", "2026-03-29", "--start '2026-13-01' is not a date; use YYYY-MM-DD"),
        (FLOW, "2026-03-29", "2027-01-01", "is in the future"),
        (FLOW, "2026-03-29T00:10", "2026-03-29T00:50", "no interval of schedule '0 * * * *'"),
    ],
)
def test_bad_input_is_a_one_line_error(h, clock, flow, start, end, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((BackfillError, NotFoundError)) as err:
        bo.create_backfill(h.store, flow, start, end, by="ann", now=clock())
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert bo.list_backfills(h.store) == []


def test_the_cli_creates_shows_and_refuses_in_one_line(h, clock, backend_store) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from flowkit.cli.root import main

    base = ["--database-url", backend_store.url, "--broker-url", "memory://", "--dags-folder", DAGS, "backfill"]
    runner = CliRunner()
    dry = runner.invoke(
        main, [*base, "create", FLOW, "--start", "2026-03-29", "--end", "2026-03-29T03:00", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert "2026-03-29 00:00 .. 2026-03-29 01:00 UTC  create: no run yet" in dry.output
    assert dry.output.strip().endswith("dry run: 3 interval(s): 3 create; nothing created")
    assert bo.list_backfills(backend_store) == []
    made = runner.invoke(main, [*base, "create", FLOW, "--start", "2026-03-29", "--end", "2026-03-29T03:00"])
    assert made.exit_code == 0, made.output
    bf = int(made.output.strip())
    shown = runner.invoke(main, [*base, "show", str(bf)])
    assert "progress  0 done, 0 running, 0 failed, 0 kept (existing run left alone), 3 left" in shown.output
    assert "no estimate yet" in shown.output
    listed = runner.invoke(main, [*base, "list"])
    assert f"{bf}   hourly_bf  running" in listed.output
    bad = runner.invoke(main, [*base, "create", "manual_only", "--start", "2026-03-29", "--end", "2026-03-30"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "has no schedule=" in bad.output
    cap = runner.invoke(main, [*base, "create", FLOW, "--start", "x", "--end", "y", "--max-active-runs", "0"])
    assert cap.exit_code == 2 and "--max-active-runs" in cap.output
    gone = runner.invoke(main, [*base, "cancel", "999"])
    assert gone.exit_code == 1 and "no backfill with id 999" in gone.output
    cancelled = runner.invoke(main, [*base, "cancel", str(bf)])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output


def test_the_estimate_is_the_rate_so_far_times_what_is_left() -> None:
    from flowkit.backfill.plan import estimate_finish

    start, now = utc(2026, 1, 1, 0), utc(2026, 1, 1, 1)
    # 6 runs ended in the hour since the first start: 10 min each; 12 left -> 2 more hours
    got = estimate_finish(now, finished=6, remaining=12, first_started=start, last_ended=now)
    assert got == utc(2026, 1, 1, 3)
    assert estimate_finish(now, finished=0, remaining=12, first_started=start, last_ended=None) is None
    assert estimate_finish(now, finished=6, remaining=0, first_started=start, last_ended=now) == now


def test_a_refused_re_run_leaves_the_run_in_its_own_lane(h, clock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given a failed scheduled run whose retry is refused (say, it changed meanwhile)
    from flowkit.errors import ActionRefused

    monkeypatch.setenv("BACKFILL_FAIL_HOURS", "3")
    bad = _existing(h, 3)
    monkeypatch.delenv("BACKFILL_FAIL_HOURS")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ActionRefused("it changed meanwhile")

    monkeypatch.setattr(type(h.store), "retry_run", refuse)
    bf = bo.create_backfill(
        h.store, FLOW, "2026-03-29T02:00", "2026-03-29T03:00", reprocess="failed", by="ann", now=clock()
    )
    bo.advance_backfills(h.store, "t", clock())
    # Then the run keeps its state and stays out of the backfill's lane
    run = h.store.get_run(bad)
    assert run["state"] == "failed" and run["backfill_id"] is None
    assert bo.progress(h.store, bf)["kept"] == 1


def test_two_advances_from_the_same_cursor_count_its_intervals_once(h, clock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given two schedulers that read the backfill at the same cursor (a lease handover),
    # each pass looking at 2 intervals with room for more
    monkeypatch.setattr(bo, "SCAN_PER_PASS", 2)
    bf = bo.create_backfill(h.store, FLOW, "2026-03-29", "2026-03-29T06:00", max_active_runs=6, by="ann", now=clock())
    seen = bo.get_backfill(h.store, bf)
    bo._advance_one(h.store, "a", clock(), dict(seen), bo.Advance())
    bo._advance_one(h.store, "b", clock(), dict(seen), bo.Advance())
    # Then the intervals are counted once and created once
    assert bo.get_backfill(h.store, bf)["handed"] == 2
    assert len(backfill_runs(h.store, bf)) == 2
    h.scheduler.sweep()  # starts the two created outside the scheduler
    drive(h, clock, bf, cap=6)
    assert bo.progress(h.store, bf)["done"] == 6
    one_run_per_interval(h.store)
