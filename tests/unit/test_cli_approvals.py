"""`flowkit approve/reject`, the outcome of compensation in `runs list/show`, and `flowkit dev`
with approval steps."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main
from flowkit.testing import InlineHarness

ROOT = Path(__file__).resolve().parents[2]
SAGA_DAGS = str(ROOT / "tests" / "dags" / "saga")


def cli(store, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        main, ["--database-url", store.url, "--broker-url", "memory://", "--dags-folder", SAGA_DAGS, *args]
    )


def test_approve_through_the_cli_records_who_and_why(sqlite_store):
    # Given a run waiting at its approval step
    h = InlineHarness(sqlite_store, SAGA_DAGS)
    run_id = h.trigger("approve_me")
    h.work()
    # When alice approves it (by a run id prefix)
    out = cli(sqlite_store, "approve", run_id[:8], "sign_off", "--by", "alice", "--reason", "totals ok")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"run {run_id} step sign_off: approved by alice"
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    assert h.run_until_done(run_id) == "success"
    # Then the audit trail shows the decision with its actor and reason
    shown = cli(sqlite_store, "runs", "show", run_id, "--events")
    line = next(x for x in shown.output.splitlines() if " approved " in x)
    assert "alice" in line and "approved by alice: totals ok" in line
    # ... and deciding it again says what state it is in, in one line
    again = cli(sqlite_store, "reject", run_id, "sign_off", "--by", "bob")
    assert again.exit_code == 1
    assert again.output.strip() == (
        f'error: step "sign_off" of run {run_id} (flow "approve_me") is success (approved by alice), '
        "not awaiting approval (the run is success)"
    )


def test_unknown_run_or_step_is_one_line(sqlite_store):
    h = InlineHarness(sqlite_store, SAGA_DAGS)
    run_id = h.trigger("approve_me")
    out = cli(sqlite_store, "approve", "0000nope", "sign_off", "--by", "a")
    assert out.exit_code == 1 and out.output.startswith("error: no run with id '0000nope'")
    out = cli(sqlite_store, "reject", run_id, "publish", "--by", "a")
    assert out.exit_code == 1 and "is a task step, not an approval" in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = cli(sqlite_store, "approve", run_id, "sign_off", "--by", " ")
    assert out.exit_code == 2 and "say who decides" in out.output


def test_runs_list_and_show_tell_the_compensation_outcome(sqlite_store):
    h = InlineHarness(sqlite_store, SAGA_DAGS)
    run_id = h.trigger("saga_comp_fails")
    assert h.run_until_done(run_id) == "failed"
    listed = cli(sqlite_store, "runs", "list")
    assert "failed (compensation failed)" in listed.output
    as_json = json.loads(cli(sqlite_store, "runs", "list", "--json").output)
    assert as_json[0]["outcome"] == "compensation failed"
    shown = cli(sqlite_store, "runs", "show", run_id).output
    assert "state failed (compensation failed)" in shown
    assert "second:compensate" in shown and "RuntimeError: cannot release the hold" in shown
    detail = json.loads(cli(sqlite_store, "runs", "show", run_id, "--json").output)
    assert detail["outcome"] == "compensation failed"
    # the compensation steps follow the flow's own, last-undone first
    assert [s["step"] for s in detail["steps"]] == ["first", "second", "third", "second:compensate", "first:compensate"]


def _dev(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", SAGA_DAGS, "dev", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_dev_approves_and_rejects_for_scripts(tmp_path):
    ok = _dev(tmp_path, "approve_me", "--approve", "sign_off")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "publish" in ok.stdout and ": success" in ok.stdout
    no = _dev(tmp_path, "approve_me", "--reject", "all")
    assert no.returncode == 1, no.stdout + no.stderr
    assert "state failed (compensated)" in no.stdout and "prepare:compensate" in no.stdout
    bad = _dev(tmp_path, "approve_me", "--approve", "sign-off")
    assert bad.returncode == 2
    assert 'flow "approve_me" has no approval step "sign-off"; its approval steps are: sign_off' in bad.stderr


@pytest.mark.slow
def test_dev_prints_the_exact_command_and_keeps_waiting(tmp_path):
    # Given `flowkit dev` on a flow with an approval and no --approve
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", SAGA_DAGS, "dev", "approve_me", "--timeout", "60"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        command = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and command is None:
            line = proc.stdout.readline()
            if "to approve: " in line:
                command = line.split("to approve: ", 1)[1].strip()
        assert command is not None and f"--database-url sqlite:///{tmp_path}/.flowkit/flowkit.db" in command
        # When the printed command is run from another terminal
        done = subprocess.run(
            [sys.executable, "-m", "flowkit.cli", *shlex.split(command)[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # Then the dev run goes on and succeeds
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert ": success" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
