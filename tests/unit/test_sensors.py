"""Sensors end to end through the store, on SQLite and PostgreSQL, on an injected clock (the
store's and the scheduler's): the poke schedule with its backoff, the timeout by wall time
from the first poke, on_timeout fail and skip, pokes that are not retries, the file= and
flow= sensors, and what ``flowkit runs show`` says about a sensor. Nothing waits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect

from flowkit.cli import main
from flowkit.store import base as store_base
from flowkit.store import worker_ops
from flowkit.testing import FakeClock

from ..conftest import TEST_DAGS
from ..store_backends import inline_harness

SENSORS = str(TEST_DAGS / "sensors")
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One clock for the scheduler and the store (a worker's writes stamp the store's time)."""
    fake = FakeClock(T0)
    monkeypatch.setattr(store_base, "utcnow", fake)
    monkeypatch.setattr(worker_ops, "utcnow", fake)
    return fake


@pytest.fixture
def harness(backend_store, clock):  # type: ignore[no-untyped-def]
    return inline_harness(backend_store, SENSORS, clock=clock)


def _script(tmp_path: Path, words: str) -> dict[str, str]:
    path = tmp_path / "script.txt"
    path.write_text(words)
    return {"script": str(path)}


def _row(store, run_id: str, step: str = "wait") -> dict:  # type: ignore[no-untyped-def]
    return next(r for r in store.step_runs(run_id) if r["step"] == step)


def _poke_due(h, run_id: str, clock: FakeClock, step: str = "wait") -> timedelta | None:  # type: ignore[no-untyped-def]
    """Move the clock to the step's next poke and run it; returns when it was, from T0."""
    due = _row(h.store, run_id, step)["next_attempt_at"]
    if due is None:
        return None
    clock.now = max(clock.now, due.astimezone(UTC))
    h.scheduler.step_once(max_wait=0)
    h.work()
    return due.astimezone(UTC) - T0


def _reasons(store, run_id: str, step: str = "wait") -> list[str]:  # type: ignore[no-untyped-def]
    return [e["reason"] for e in store.events(run_id) if e["step"] == step and e["action"] == "step_state"]


def test_pokes_back_off_and_the_last_lands_on_the_timeout(harness, clock, tmp_path):
    # Given a sensor every 10 s, backoff 2, timeout 1 m, whose condition never holds
    run_id = harness.trigger("sensor_clocked_fail", _script(tmp_path, ""))
    harness.work()  # the first poke, at T0
    # When the scheduler's timer runs each next poke
    dues = []
    while (due := _poke_due(harness, run_id, clock)) is not None:
        dues.append(due.total_seconds())
    # Then the waits are 10, 20, then capped by the timeout (60 s after the first poke)
    assert dues == [10.0, 30.0, 60.0]
    row = _row(harness.store, run_id)
    assert row["state"] == "failed"
    assert row["sensor_pokes"] == 4 and row["attempts"] == 4
    assert _reasons(harness.store, run_id)[-1] == ("sensor timed out after 60 s (4 pokes; the last said: scripted no)")
    assert harness.store.get_run(run_id)["state"] == "failed"
    after = _row(harness.store, run_id, "after")
    assert after["state"] == "upstream_failed"
    # And between pokes the sensor held nothing: no attempt was left queued or running
    assert {a["state"] for a in harness.store.attempts(run_id, "wait")} == {"not_yet"}


def test_the_timeout_counts_wall_time_from_the_first_poke(harness, clock, tmp_path):
    # Given a run whose sensor first pokes 5 minutes after the run was created
    run_id = harness.trigger("sensor_clocked_skip", _script(tmp_path, ""))
    clock.advance(300)
    harness.work()
    first = T0 + timedelta(seconds=300)
    row = _row(harness.store, run_id)
    assert row["sensor_first_poke_at"].astimezone(UTC) == first
    assert row["sensor_timeout_at"].astimezone(UTC) == first + timedelta(minutes=1)
    # When the second poke runs late (50 s, not 10 s, after the first)
    clock.advance(50)
    harness.scheduler.step_once(max_wait=0)
    harness.work()
    # Then the next poke is still due at the timeout, 60 s after the first poke, not 10 s on
    assert _row(harness.store, run_id)["next_attempt_at"].astimezone(UTC) == first + timedelta(seconds=60)
    assert _poke_due(harness, run_id, clock) == timedelta(seconds=360)
    assert _row(harness.store, run_id)["state"] == "skipped"
    assert _row(harness.store, run_id)["sensor_pokes"] == 3


def test_on_timeout_skip_skips_the_sensor_and_trigger_rules_decide_downstream(harness, clock, tmp_path):
    run_id = harness.trigger("sensor_clocked_skip", _script(tmp_path, ""))
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    states = {r["step"]: r["state"] for r in harness.store.step_runs(run_id)}
    assert states == {"wait": "skipped", "after": "skipped", "always": "success"}
    assert _reasons(harness.store, run_id)[-1] == (
        'sensor timed out after 60 s (7 pokes; the last said: scripted no); skipped (on_timeout="skip")'
    )


def test_a_poke_that_says_yes_succeeds_with_its_value(harness, clock, tmp_path):
    run_id = harness.trigger("sensor_clocked_fail", _script(tmp_path, "no no yes"))
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    assert harness.store.results(run_id)["wait"] == {"answered": "yes"}
    row = _row(harness.store, run_id)
    assert (row["sensor_pokes"], row["sensor_last_said"]) == (3, "done")
    # run_until_done moves the clock 1 ms past each due time
    assert abs(row["sensor_last_poke_at"].astimezone(UTC) - (T0 + timedelta(seconds=30))) < timedelta(seconds=1)


def test_pokes_that_say_not_yet_do_not_use_up_retries(harness, clock, tmp_path):
    # Given retries=1: five "not yet" pokes and one error still leave the budget unspent
    run_id = harness.trigger("sensor_clocked_retries", _script(tmp_path, "no no error no no no yes"))
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    assert [a["state"] for a in harness.store.attempts(run_id, "wait")] == [
        "not_yet", "not_yet", "failed", "not_yet", "not_yet", "not_yet", "success",
    ]  # fmt: skip
    assert any("attempt 3 (failed poke 1) of 2 failed; retrying in" in r for r in _reasons(harness.store, run_id))


def test_a_poke_that_keeps_failing_uses_up_retries(harness, clock, tmp_path):
    run_id = harness.trigger("sensor_clocked_retries", _script(tmp_path, "no error no error"))
    assert harness.run_until_done(run_id, advance=clock.advance) == "failed"
    assert _reasons(harness.store, run_id)[-1] == (
        "attempt 4 (failed poke 2) of 2 failed: RuntimeError: the scripted poke failed"
    )


def test_a_file_sensor_waits_for_its_file(harness, clock):
    run_id = harness.trigger("sensor_clocked_file")
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    row = _row(harness.store, run_id, "landed")
    missing = str(Path(SENSORS) / "never-created.csv")
    assert row["state"] == "skipped"
    assert row["sensor_last_said"] == f'NotYet("{missing} does not exist yet")'
    assert row["sensor_pokes"] == 3  # at 0, 10 and 30 s (backoff 2, capped by the timeout)


def test_a_file_sensor_whose_file_is_there_succeeds_at_once(harness, clock):
    run_id = harness.trigger("sensor_file")
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    assert harness.store.results(run_id)["landed"] == str(Path(SENSORS) / "sensor_flows.py")


def test_a_flow_sensor_waits_for_a_success_of_the_same_logical_date(harness, clock):
    store, day = harness.store, datetime(2026, 12, 4, tzinfo=UTC)

    def create(flow: str, logical_date: datetime) -> str:
        run_id = store.create_run(store.flow_spec(flow), {}, actor="test", logical_date=logical_date)
        harness.scheduler.start_run(run_id)
        return run_id

    # Given a run waiting for sensor_clocked_source on 2026-12-04, and a source run of another day
    waiting = create("sensor_clocked_flow", day)
    harness.run_until_done(create("sensor_clocked_source", day - timedelta(days=1)))
    harness.work()
    said = _row(store, waiting, "source_done")["sensor_last_said"]
    assert said == 'NotYet("no run of flow \\"sensor_clocked_source\\" for 2026-12-04T00:00:00+00:00 yet")'
    # When the source's run of the same day succeeds
    harness.run_until_done(create("sensor_clocked_source", day))
    # Then the next poke finds it and the run goes on
    assert harness.run_until_done(waiting, advance=clock.advance) == "success"
    assert store.results(waiting)["source_done"] == {
        "flow": "sensor_clocked_source",
        "logical_date": "2026-12-04T00:00:00+00:00",
    }
    assert _row(store, waiting, "source_done")["sensor_pokes"] == 2


def test_runs_show_says_what_the_sensor_did_and_will_do(harness, clock, tmp_path):
    run_id = harness.trigger("sensor_clocked_fail", _script(tmp_path, "no no yes"))
    harness.work()
    _poke_due(harness, run_id, clock)  # the second poke, at T0 + 10 s
    runner = CliRunner()

    def show(*args: str) -> str:
        out = runner.invoke(main, ["--database-url", harness.store.url, "runs", "show", run_id, *args])
        assert out.exit_code == 0, out.output
        return out.stdout

    expected = (
        'wait: 2 pokes, last at 2026-12-05 12:00:10 said NotYet("scripted no"); '
        "next poke at 2026-12-05 12:00:30; times out at 2026-12-05 12:01:00"
    )
    text = show()
    assert "\nSENSORS\n" + expected in text
    assert "sensor " + expected.removeprefix("wait: ") in show("--step", "wait")
    [wait] = [s for s in json.loads(show("--json"))["steps"] if s["step"] == "wait"]
    assert wait["sensor"]["pokes"] == 2
    assert wait["sensor"]["last_said"] == 'NotYet("scripted no")'
    assert wait["sensor"]["next_poke_at"].startswith("2026-12-05T12:00:30")
    assert wait["sensor"]["times_out_at"].startswith("2026-12-05T12:01:00")
    # a step that is not a sensor has no such line
    assert "after:" not in text.split("SENSORS")[1]


def test_a_poke_error_past_the_timeout_ends_the_wait_whatever_retries_are_left(harness, clock, tmp_path):
    # Given retries=1, every 10 s for 10 minutes: 60 "not yet", then the poke at the timeout raises
    run_id = harness.trigger("sensor_clocked_retries", _script(tmp_path, "no " * 60 + "error"))
    assert harness.run_until_done(run_id, advance=clock.advance, max_rounds=200) == "failed"
    assert _reasons(harness.store, run_id)[-1] == (
        "sensor timed out after 600 s (61 pokes; the last said: error: RuntimeError: the scripted poke failed)"
    )
    assert [a["state"] for a in harness.store.attempts(run_id, "wait")][-2:] == ["not_yet", "failed"]


def test_an_operators_retry_starts_a_new_wait(harness, clock, tmp_path):
    # Given a sensor that timed out, and the condition still false
    run_id = harness.trigger("sensor_clocked_fail", _script(tmp_path, ""))
    assert harness.run_until_done(run_id, advance=clock.advance) == "failed"
    # When an operator retries it an hour later
    clock.advance(3600)
    harness.act(harness.store.retry_run(run_id, by="ann", reason="the partner resent the file"))
    harness.work()
    # Then its first poke starts a new wait, with the whole timeout ahead of it
    row = _row(harness.store, run_id)
    assert row["state"] == "up_for_retry"
    assert row["sensor_pokes"] == 1 and row["sensor_first_attempt"] == 5
    assert row["sensor_first_poke_at"].astimezone(UTC) == clock.now
    assert row["sensor_timeout_at"].astimezone(UTC) == clock.now + timedelta(minutes=1)
    Path(tmp_path / "script.txt").write_text("yes")
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"


def test_a_manual_runs_flow_sensor_waits_for_a_success_after_it_was_created(harness, clock):
    store = harness.store
    # Given a source run that succeeded before the waiting run was created
    assert harness.run_until_done(harness.trigger("sensor_clocked_source")) == "success"
    clock.advance(1)
    waiting = harness.trigger("sensor_clocked_flow")
    harness.work()
    said = _row(store, waiting, "source_done")["sensor_last_said"]
    assert said.startswith('NotYet("no run of flow \\"sensor_clocked_source\\" for this manual run (a success')
    # When a new source run succeeds
    clock.advance(1)
    assert harness.run_until_done(harness.trigger("sensor_clocked_source")) == "success"
    # Then the waiting run goes on
    assert harness.run_until_done(waiting, advance=clock.advance) == "success"


def test_migration_0014_goes_down_and_up_under_a_waiting_sensor(harness, clock, tmp_path):
    # Given a sensor parked on its timer
    store = harness.store
    run_id = harness.trigger("sensor_clocked_fail", _script(tmp_path, "no no yes"))
    harness.work()
    assert _row(store, run_id)["state"] == "up_for_retry"
    # When the schema goes back to before the sensor columns, and up again
    with store.engine.connect() as conn:
        config = store._alembic_config(conn)
        before_sensors = ScriptDirectory.from_config(config).get_revision("0014").down_revision
        command.downgrade(config, before_sensors)
        conn.commit()
    store.dispose()
    assert store.schema_revision() == before_sensors
    assert not [c["name"] for c in inspect(store.engine).get_columns("step_runs") if c["name"].startswith("sensor_")]
    store.upgrade()
    # Then the step rows are all there, and the sensor goes on (its wait counted afresh)
    assert store.schema_revision() == store.head_revision()
    assert {r["step"] for r in store.step_runs(run_id)} == {"wait", "after"}
    assert harness.run_until_done(run_id, advance=clock.advance) == "success"
    assert _row(store, run_id)["sensor_pokes"] == 2  # the two pokes after the upgrade
