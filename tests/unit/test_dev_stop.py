"""How `flowkit dev` stops: on Ctrl-C and SIGTERM within a second, with the run cancelled and
its shell commands killed; when its run ends, even if a step body ignores its timeout; and
never resuming a run that an earlier, killed `flowkit dev` left in the same store. Each test
runs the real command in a subprocess. Flows: tests/dags/devstop/flows.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..pids import pid_gone

ROOT = Path(__file__).resolve().parents[2]
DAGS = str(ROOT / "tests" / "dags" / "devstop")

pytestmark = pytest.mark.slow


class Dev:
    """`flowkit dev FLOW` started in ``folder``; its output is read once it has exited."""

    def __init__(self, folder: Path, flow: str) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit.cli", "--dags-folder", DAGS, "dev", flow],
            cwd=folder,
            env={**os.environ, "DEV_TEST_DIR": str(folder)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = self.err = ""

    def wait_for_file(self, name: str, timeout: float = 30) -> int:
        path = self.folder / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text())
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.05)
        raise AssertionError(f"{name} was not written within {timeout:g} s")

    def stop_with(self, signum: int, *, again_after: float | None = None) -> float:
        """Send ``signum`` (and again after ``again_after`` s); returns the seconds to exit."""
        started = time.monotonic()
        self.proc.send_signal(signum)
        if again_after is not None:
            time.sleep(again_after)
            if self.proc.poll() is None:
                self.proc.send_signal(signum)
        self.out, self.err = self.proc.communicate(timeout=30)
        return time.monotonic() - started


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Process groups a test may leave behind on purpose (a SIGKILLed dev's shell step)."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def query(folder: Path, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(folder / ".flowkit" / "flowkit.db") as db:
        return db.execute(sql, args).fetchall()


def only_run(folder: Path, flow: str) -> tuple[str, str]:
    (row,) = query(folder, "SELECT id, state FROM runs WHERE flow_name = ?", flow)
    return row


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_dev_and_its_shell_step_within_a_second(tmp_path, signum, code):
    # Given `flowkit dev` running a shell step whose command waits on a 60 s `sleep`
    dev = Dev(tmp_path, "long_shell")
    child = dev.wait_for_file("child.pid")
    group = dev.wait_for_file("shell.pid")
    # When it gets SIGINT (Ctrl-C) or SIGTERM
    took = dev.stop_with(signum)
    # Then it exits within a second, with 130 or 143, one line and no traceback
    assert dev.proc.returncode == code, dev.out + dev.err
    assert took < 1.5, f"took {took:.2f} s"
    assert dev.err == "", dev.err
    name = signal.Signals(signum).name
    assert f"flowkit dev interrupted ({name}): cancelled (1 step(s) cancelled" in dev.out
    assert "1 shell command process group(s) killed" in dev.out
    # the command's process group is gone, its `sleep` child too
    assert pid_gone(child, within=1.0), "the shell step's sleep outlived flowkit dev"
    assert pid_gone(group, within=1.0), "the shell step's shell outlived flowkit dev"
    # and the run is cancelled in the store, its attempt ended with the reason
    run_id, state = only_run(tmp_path, "long_shell")
    assert state == "cancelled"
    assert query(tmp_path, "SELECT state, error FROM attempts WHERE run_id = ?", run_id) == [
        ("cancelled", f"cancelled by flowkit dev: flowkit dev interrupted ({name})")
    ]


def test_ctrl_c_twice_during_a_python_step_exits_130_without_a_traceback(tmp_path):
    # Given `flowkit dev` running a Python step that sleeps 60 s in one blocking call
    dev = Dev(tmp_path, "long_python")
    dev.wait_for_file("python.started")
    # When Ctrl-C is pressed twice, 0.1 s apart
    took = dev.stop_with(signal.SIGINT, again_after=0.1)
    # Then it exits at once with 130, without the body's 60 s, and without a traceback
    assert dev.proc.returncode == 130, dev.out + dev.err
    assert took < 1.5, f"took {took:.2f} s"
    assert "Traceback" not in dev.err and "Aborted" not in dev.err, dev.err
    run_id, state = only_run(tmp_path, "long_python")
    assert state == "cancelled"
    assert query(tmp_path, "SELECT step, state FROM step_runs WHERE run_id = ? ORDER BY step", run_id) == [
        ("after", "cancelled"),
        ("sleeps", "cancelled"),
    ]
    assert query(tmp_path, "SELECT step, state FROM attempts WHERE run_id = ?", run_id) == [("sleeps", "cancelled")]


def test_a_later_dev_does_not_resume_the_run_of_a_killed_one(tmp_path, leftovers):
    # Given a `flowkit dev` killed with SIGKILL while its shell step ran: the run stays
    # running in .flowkit, with a live attempt (its command is orphaned; the test kills it)
    killed = Dev(tmp_path, "long_shell")
    killed.wait_for_file("child.pid")
    leftovers.append(killed.wait_for_file("shell.pid"))
    killed.proc.kill()
    killed.proc.communicate(timeout=10)
    old_run, state = only_run(tmp_path, "long_shell")
    assert state == "running"
    attempts_before = query(tmp_path, "SELECT number FROM attempts WHERE run_id = ?", old_run)
    (tmp_path / "child.pid").unlink()
    # When `flowkit dev` runs another flow in the same folder
    later = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", DAGS, "dev", "quick"],
        cwd=tmp_path,
        env={**os.environ, "DEV_TEST_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then its own run succeeds, and it says it closed the old run instead of resuming it
    assert later.returncode == 0, later.stdout + later.stderr
    assert f"closed 1 run(s) a killed flowkit dev left running, not resumed: {old_run} (long_shell)" in later.stdout
    assert only_run(tmp_path, "long_shell") == (old_run, "cancelled")
    # the old shell step was not published again: no new attempt, its command never restarted
    assert query(tmp_path, "SELECT number FROM attempts WHERE run_id = ?", old_run) == attempts_before
    assert not (tmp_path / "child.pid").exists()


def test_dev_exits_when_the_run_ends_though_a_timed_out_body_still_sleeps(tmp_path):
    # Given a step with timeout=2 whose body sleeps 30 s in one call (a worker thread cannot
    # be interrupted there)
    dev = Dev(tmp_path, "stubborn_timeout")
    assert dev.proc.stdout is not None
    for line in dev.proc.stdout:
        if line.split() == ["stubborn", "running"]:
            break
    running_at = time.monotonic()
    # When the timeout passes: the attempt is recorded failed once the grace period is over
    dev.out, dev.err = dev.proc.communicate(timeout=60)
    took = time.monotonic() - running_at
    # Then dev exits 1 with the run's outcome within ~3 s of the timeout, not after 30 s
    assert dev.proc.returncode == 1, dev.out + dev.err
    assert took < 2 + 3, f"exited {took:.1f} s after the step started"
    assert "stubborn: timed out after 2 s (timeout= on the step)" in dev.out
    assert "Traceback" not in dev.err, dev.err
