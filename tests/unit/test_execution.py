"""How a step executes, in-process on SQLite: shell steps, success_when, Refs, timeouts and
`runs show --step`. Flows: tests/dags/exec/execution.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowkit
from flowkit.cli import main
from flowkit.execution import timeouts
from flowkit.execution.attempt import run_attempt
from flowkit.testing import FakeClock, InlineHarness

from ..pids import pid_gone

ROOT = Path(__file__).resolve().parents[2]
DAGS = str(ROOT / "tests" / "dags" / "exec")


@pytest.fixture
def harness(sqlite_store, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EXEC_TEST_DIR", str(tmp_path))
    clock = FakeClock()
    h = InlineHarness(sqlite_store, DAGS, clock=clock)
    h.clock_advance = clock.advance  # type: ignore[attr-defined]
    return h


def run(h: InlineHarness, flow: str, **params: object) -> str:
    run_id = h.trigger(flow, dict(params))
    h.run_until_done(run_id, advance=h.clock_advance)  # type: ignore[attr-defined]
    return run_id


def attempts(h: InlineHarness, run_id: str, step: str) -> list[dict]:
    return h.store.attempts(run_id, step)


def step_states(h: InlineHarness, run_id: str) -> dict[str, str]:
    return {s["step"]: s["state"] for s in h.store.step_runs(run_id)}


# -- shell steps ------------------------------------------------------------------------------
def test_shell_step_runs_with_env_and_cwd_and_returns_exit_code_and_last_lines(harness):
    run_id = run(harness, "shell_ok")
    assert harness.store.get_run(run_id)["state"] == "success"
    result = harness.store.results(run_id)["hello"]
    assert result == {"exit_code": 0, "last_lines": ["hello world", "from /"]}
    assert harness.store.results(run_id)["after"] == result  # downstream steps read it as JSON
    (a,) = attempts(harness, run_id, "hello")
    assert a["output"] == "hello world\nfrom /"


def test_shell_step_failing_exit_code_fails_each_attempt_with_the_code_and_last_line(harness):
    run_id = run(harness, "shell_exit")
    assert harness.store.get_run(run_id)["state"] == "failed"
    both = attempts(harness, run_id, "bad")
    assert [a["state"] for a in both] == ["failed", "failed"]  # retries apply
    assert both[0]["error"] == ("the command exited with 3; it should exit with 0; last output line: 'about to fail'")
    assert both[0]["output"] == "about to fail"
    assert both[0]["traceback"] is None


def test_shell_step_success_codes_accept_another_exit_code(harness):
    run_id = run(harness, "shell_codes")
    assert harness.store.results(run_id)["warns"] == {"exit_code": 3, "last_lines": ["partial"]}


def test_shell_step_fails_on_a_matching_output_line_even_when_it_exits_0(harness):
    run_id = run(harness, "shell_fail_on")
    (a,) = attempts(harness, run_id, "grep")
    assert a["state"] == "failed"
    assert a["error"] == "output line matched fail_on '^ERROR\\\\b': 'ERROR: disk full'"
    assert a["output"] == "starting\nERROR: disk full\ndone"


def test_shell_step_keeps_only_the_end_of_a_long_output(harness):
    run_id = run(harness, "shell_output")
    (a,) = attempts(harness, run_id, "chatty")
    assert a["state"] == "success"
    assert 60_000 < len(a["output"]) <= 64 * 1024
    assert a["output"].endswith("line-2999-" + "a" * 40)
    assert not a["output"].startswith("line-0-")
    assert harness.store.results(run_id)["chatty"]["last_lines"][-1] == "line-2999-" + "a" * 40


def test_shell_step_timeout_kills_the_whole_process_group(harness, tmp_path):
    started = time.monotonic()
    run_id = run(harness, "shell_timeout")
    assert time.monotonic() - started < 4
    (a,) = attempts(harness, run_id, "sleeper")
    assert a["state"] == "failed"
    assert a["error"].startswith("timed out after 1 s (timeout= on the step)")
    assert a["output"] == "started"
    child = int((tmp_path / "child.pid").read_text())
    assert pid_gone(child), f"the command's child {child} outlived the timeout"


def test_shell_step_leaves_no_background_process_behind(harness, tmp_path):
    run_id = run(harness, "shell_leftover")
    assert harness.store.get_run(run_id)["state"] == "success"
    child = int((tmp_path / "child.pid").read_text())
    assert pid_gone(child), f"the command's background child {child} outlived the step"


def test_shell_step_cwd_that_does_not_exist_fails_with_the_reason(sqlite_store, tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "cwd.py").write_text(
        "from flowkit import Flow\nflow = Flow('cwd').shell('ls', 'ls', cwd='/no/such/dir')\n"
    )
    h = InlineHarness(sqlite_store, str(tmp_path / "dags"))
    run_id = h.trigger("cwd")
    assert h.run_until_done(run_id) == "failed"
    (a,) = sqlite_store.attempts(run_id, "ls")
    assert a["error"].startswith("could not start the command in /no/such/dir: ")
    assert "No such file or directory" in a["error"]


def test_shell_step_stops_its_group_when_the_worker_is_stopped(tmp_path):
    # A pool child told to stop (SIGTERM -> SystemExit inside the step) kills the command.
    from flowkit.execution.shell import OutputTail
    from flowkit.execution.shell import run as run_shell
    from flowkit.spec import ShellSpec

    spec = ShellSpec(command=f"sleep 30 & echo $! > {tmp_path}/child.pid; wait")
    timer = threading.Timer(0.5, lambda: timeouts._set_async_exc(main_ident, SystemExit))
    main_ident = threading.get_ident()
    timer.start()
    with pytest.raises(SystemExit):
        for _ in range(100):  # give the async exception bytecode to land on, inside run()
            run_shell(spec, OutputTail())
    child = int((tmp_path / "child.pid").read_text())
    assert pid_gone(child)


# -- success_when -------------------------------------------------------------------------------
def test_success_when_falsy_fails_the_attempt_and_retries_apply(harness):
    run_id = run(harness, "success_when", rows=0)
    both = attempts(harness, run_id, "count")
    assert [a["state"] for a in both] == ["failed", "failed"]
    assert both[0]["error"] == (
        'step count: success_when=<lambda> said no to the result {"rows": 0}; the attempt failed (retries apply)'
    )
    assert step_states(harness, run_id)["after"] == "upstream_failed"
    assert "count" not in harness.store.results(run_id)


def test_success_when_truthy_keeps_the_result(harness):
    run_id = run(harness, "success_when", rows=5)
    assert harness.store.get_run(run_id)["state"] == "success"
    assert harness.store.results(run_id)["count"] == {"rows": 5}


def test_success_when_shows_a_long_result_truncated(sqlite_store, tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "long.py").write_text(
        "from flowkit import Flow\n"
        "flow = Flow('long').step('big', lambda: {'text': 'x' * 5000}, success_when=lambda r: False)\n"
    )
    h = InlineHarness(sqlite_store, str(tmp_path / "dags"))
    run_id = h.trigger("long")
    assert h.run_until_done(run_id) == "failed"
    (a,) = sqlite_store.attempts(run_id, "big")
    assert "… (truncated)" in a["error"] and len(a["error"]) < 500


def test_an_exception_in_success_when_fails_with_its_traceback(harness):
    run_id = run(harness, "success_when_raises")
    (a,) = attempts(harness, run_id, "count")
    assert a["error"] == "KeyError: 'no such field'"
    assert "broken_check" in a["traceback"] and "raise KeyError" in a["traceback"]


def test_success_when_applies_to_shell_steps(harness):
    run_id = run(harness, "shell_success_when")
    (a,) = attempts(harness, run_id, "count")
    assert a["state"] == "failed"
    assert '"last_lines": ["0 rows"]' in a["error"] and "success_when=<lambda> said no" in a["error"]


# -- Refs ---------------------------------------------------------------------------------------
def test_a_ref_is_stored_tagged_and_given_back_as_a_ref(harness):
    run_id = run(harness, "refs")
    assert harness.store.get_run(run_id)["state"] == "success", harness.store.attempts(run_id)
    stored = harness.store.results(run_id)
    assert stored["produce"] == {
        "__flowkit_ref__": 1,
        "uri": "s3://lake/orders/2026-11-23.parquet",
        "meta": {"rows": 120, "format": "parquet"},
    }
    assert stored["consume"] == {
        "uri": "s3://lake/orders/2026-11-23.parquet",
        "rows": 120,
        "parts": ["file:///tmp/a.csv", "file:///tmp/b.csv"],
    }


def test_ref_checks_its_arguments_and_round_trips():
    from flowkit.refs import revive

    ref = flowkit.Ref("s3://b/k", rows=3)
    assert revive(json.loads(json.dumps(ref.to_json()))) == ref
    assert repr(ref) == "Ref('s3://b/k', rows=3)"
    with pytest.raises(ValueError, match="non-empty string"):
        flowkit.Ref("")
    with pytest.raises(ValueError, match="metadata must be JSON"):
        flowkit.Ref("s3://b/k", when=object())


# -- timeouts -----------------------------------------------------------------------------------
def test_timeout_interrupts_a_blocking_sleep_in_the_main_thread(harness):
    started = time.monotonic()
    run_id = run(harness, "timeout_sleep")
    assert time.monotonic() - started < 3
    (a,) = attempts(harness, run_id, "sleeps")
    assert a["error"] == "timed out after 1 s (timeout= on the step); make it faster or raise the timeout"
    assert "time.sleep(4)" in a["traceback"]
    assert step_states(harness, run_id)["after"] == "upstream_failed"


def test_a_step_that_swallows_its_timeout_still_times_out(harness):
    run_id = run(harness, "timeout_swallowed")
    (a,) = attempts(harness, run_id, "swallows")
    assert a["state"] == "failed" and a["error"].startswith("timed out after 0.3 s")


def _in_thread(h: InlineHarness, flow: str, while_running=None) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Trigger ``flow`` and run its first attempt in a worker thread (the threads pool),
    calling ``while_running(run_id)`` meanwhile."""
    run_id = h.trigger(flow)
    item = h.dispatcher.sent.pop(0)
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_attempt(h.runtime, item.run_id, item.step.name, item.attempt))
    )
    worker.start()
    if while_running is not None:
        while_running(run_id)
    worker.join(10)
    assert outcome, "the attempt did not end"
    return run_id, outcome[0]


def test_timeout_reaches_a_step_in_a_worker_thread(harness):
    started = time.monotonic()
    run_id, outcome = _in_thread(harness, "timeout_naps")
    assert outcome == "failed" and time.monotonic() - started < 2
    (a,) = attempts(harness, run_id, "naps")
    assert a["error"].startswith("timed out after 0.3 s")


def test_a_thread_blocked_past_the_grace_is_recorded_failed_and_its_outcome_discarded(harness, monkeypatch):
    # Given a step blocked in time.sleep(1.5) in a worker thread, timeout 0.3 s, grace 0.3 s
    monkeypatch.setattr(timeouts, "ABANDON_GRACE_SECONDS", 0.3)
    started = time.monotonic()
    failed_after: list[float] = []

    def watch(run_id: str) -> None:
        while time.monotonic() - started < 1.4 and not failed_after:
            if attempts(harness, run_id, "blocks")[0]["state"] == "failed":
                failed_after.append(time.monotonic() - started)
            time.sleep(0.02)

    run_id, outcome = _in_thread(harness, "timeout_blocked", watch)
    # Then its attempt is failed before the sleep ends, and the success that follows is discarded
    assert failed_after and failed_after[0] < 1.2, failed_after
    assert outcome == "lost_claim"
    (a,) = attempts(harness, run_id, "blocks")
    assert a["state"] == "failed"
    assert a["error"] == (
        "timed out after 0.3 s (timeout= on the step); make it faster or raise the "
        "timeout (it did not stop; its outcome will be discarded)"
    )
    assert "blocks" not in harness.store.results(run_id)


def _race_deadlines() -> int:
    """Blocks that end as their deadline fires; returns how many raised inside the block."""
    inside = 0
    for i in range(40):
        try:
            with timeouts.Deadline(0.002):
                end = time.monotonic() + 0.001 + (i % 4) * 0.0005
                while time.monotonic() < end:  # busy, so the exception can land anywhere
                    pass
        except timeouts.StepTimedOut:
            inside += 1
        time.sleep(0.005)  # a pending alarm or async exception would land here, outside
    return inside


def test_deadline_never_raises_after_its_block_ends():
    _race_deadlines()  # main thread: SIGALRM
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            _race_deadlines()
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(20)
    assert not errors


# -- runs show --step -----------------------------------------------------------------------------
def test_runs_show_step_lists_every_attempt_with_traceback_and_output(tmp_path, monkeypatch):
    from flowkit.store.sql import SqlStore

    monkeypatch.setenv("EXEC_TEST_DIR", str(tmp_path))
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = SqlStore(db)
    store.upgrade()
    h = InlineHarness(store, DAGS, clock=FakeClock())
    exit_run = h.trigger("shell_exit")
    h.run_until_done(exit_run, advance=h.clock.advance)  # type: ignore[attr-defined]
    raises_run = h.trigger("success_when_raises")
    h.run_until_done(raises_run)
    runner = CliRunner()

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(
            main, ["--database-url", db, "--broker-url", "memory://", "--dags-folder", DAGS, "runs", "show", *args]
        )

    text = cli(exit_run[:8], "--step", "bad")
    assert text.exit_code == 0, text.output
    assert "step bad  (shell, 2 attempts)" in text.output
    assert "attempt 1: failed  worker worker@test" in text.output and "attempt 2: failed" in text.output
    assert "  error: the command exited with 3" in text.output
    assert "  output (end):\n    about to fail" in text.output
    data = json.loads(cli(exit_run, "--step", "bad", "--json").output)
    assert [a["number"] for a in data["attempts"]] == [1, 2]
    assert data["attempts"][0]["output"] == "about to fail"
    tb = cli(raises_run, "--step", "count")
    assert "  traceback:\n    Traceback (most recent call last):" in tb.output
    assert "raise KeyError" in tb.output
    wrong = cli(raises_run, "--step", "cuont")
    assert wrong.exit_code == 1
    assert 'has no step "cuont". Did you mean "count"?' in wrong.output
    store.dispose()


# -- flowkit dev (an embedded worker on the threads pool) ------------------------------------------
@pytest.mark.slow
def test_dev_enforces_a_1_s_timeout_on_a_4_s_sleep(tmp_path):
    import subprocess
    import sys

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", DAGS, "dev", "timeout_sleep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ": failed" in proc.stdout
    assert "timed out after 1 s (timeout= on the step)" in proc.stdout
    assert time.monotonic() - started < 30
