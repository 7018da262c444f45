"""A step's own output captured per attempt (prints, stderr, ctx.log, a shell step's
output), capped, and shown by `flowkit logs`; in-process on SQLite.
Flows: tests/dags/obslogs/logs_flows.py."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main
from flowkit.observe import capture
from flowkit.testing import FakeClock, InlineHarness

ROOT = Path(__file__).resolve().parents[2]
DAGS = str(ROOT / "tests" / "dags" / "obslogs")


@pytest.fixture
def harness(sqlite_store):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    h = InlineHarness(sqlite_store, DAGS, clock=clock)
    h.clock_advance = clock.advance  # type: ignore[attr-defined]
    return h


def run(h: InlineHarness, flow: str) -> str:
    run_id = h.trigger(flow, {})
    h.run_until_done(run_id, advance=h.clock_advance)  # type: ignore[attr-defined]
    return run_id


def test_each_attempt_keeps_its_own_prints_stderr_and_log_records(harness):
    run_id = run(harness, "logs_retry")
    first, second = harness.store.attempts(run_id, "chatty")
    assert (first["state"], second["state"]) == ("failed", "success")
    lines1, lines2 = first["output"].split("\n"), second["output"].split("\n")
    assert lines1[0].endswith("INFO attempt 1 starting")
    assert lines1[1:] == ["printed by attempt 1", "to stderr from attempt 1", "no newline at the end"]
    assert lines2[0].endswith("INFO attempt 2 starting")
    assert lines2[1:3] == ["printed by attempt 2", "to stderr from attempt 2"]
    assert lines2[3].endswith("WARNING attempt 2 done")
    assert lines2[4] == "no newline at the end"  # a line without its newline is kept at the end
    # A step that prints nothing keeps no output (and so still finishes on the fast path).
    (quiet,) = harness.store.attempts(run_id, "quiet")
    assert quiet["output"] is None


def test_flowkit_logs_prints_the_latest_attempt_or_the_one_asked_for(harness, sqlite_store):
    run_id = run(harness, "logs_retry")
    env = {"FLOWKIT_DATABASE_URL": sqlite_store.url}
    latest = CliRunner().invoke(main, ["logs", run_id, "chatty"], env=env)
    assert latest.exit_code == 0, latest.output
    assert "printed by attempt 2" in latest.output and "attempt 1" not in latest.output
    first = CliRunner().invoke(main, ["logs", run_id, "chatty", "--attempt", "1"], env=env)
    assert first.exit_code == 0, first.output
    assert "printed by attempt 1" in first.output and "attempt 2" not in first.output


def test_flowkit_logs_says_in_one_line_what_is_unknown(harness, sqlite_store):
    run_id = run(harness, "logs_retry")
    env = {"FLOWKIT_DATABASE_URL": sqlite_store.url}
    cases = [
        (["logs", "nope", "chatty"], "no run with id 'nope'"),
        (["logs", run_id, "chaty"], 'has no step "chaty". Did you mean "chatty"?'),
        (["logs", run_id, "chatty", "--attempt", "3"], "has no attempt 3; its attempts are 1, 2"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code != 0, args
        assert message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_runs_show_step_prints_task_ids_and_the_last_log_lines(harness, sqlite_store):
    run_id = run(harness, "logs_retry")
    env = {"FLOWKIT_DATABASE_URL": sqlite_store.url}
    shown = CliRunner().invoke(main, ["runs", "show", run_id, "--step", "chatty"], env=env)
    assert shown.exit_code == 0, shown.output
    for a in harness.store.attempts(run_id, "chatty"):
        assert f"task {a['task_id']}" in shown.output
    assert "printed by attempt 1" in shown.output and "printed by attempt 2" in shown.output


def test_capture_keeps_the_tail_within_the_cap():
    with capture.capturing(("r", "s", 1), limit=1024) as out:
        for i in range(1000):
            out.write(f"line {i}\n", "stdout")
    text = out.text()
    assert len(text) <= 1024
    assert text.endswith("line 999") and "line 0\n" not in text


def test_threads_each_capture_their_own_prints(monkeypatch):
    """Two attempts on two threads at once (a threads pool): no print lands in the other's."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    results: dict[int, str] = {}
    both_in = threading.Barrier(2)

    def attempt(n: int) -> None:
        with capture.capturing(("r", f"s{n}", 1), limit=4096) as out:
            both_in.wait()
            for i in range(50):
                print(f"attempt {n} line {i}")
        results[n] = out.text()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in (1, 2):
        assert results[n].split("\n") == [f"attempt {n} line {i}" for i in range(50)]


def test_running_output_is_written_only_when_new_output_came():
    saved: list[str] = []
    with capture.capturing(("r", "flush", 1), limit=4096, save=saved.append) as out:
        capture.flush_once()
        assert saved == []  # nothing printed: no statement
        out.write("one\n", "stdout")
        capture.flush_once()
        capture.flush_once()
        assert saved == ["one"]
        out.write("two\n", "stdout")
        capture.flush_once()
        assert saved == ["one", "one\ntwo"]
