"""What a worker stops when an operator cancels the attempts it runs, and how the CLI words
it: shell commands found by their attempt and stopped on every pool, Python steps terminated
only on prefork, and a heartbeat that stops the commands of attempts no longer the worker's."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flowkit.cli.actions import stopped_line
from flowkit.execution import shell
from flowkit.execution.cancel import NOT_INTERRUPTIBLE, SHELL_STOPPED, TERMINATED, stop_cancelled
from flowkit.spec import ShellSpec

from ..pids import pid_gone


class RunningCommand:
    """``shell.run`` of a command that waits on a 30 s child, in a thread, for ``owner``."""

    def __init__(self, tmp_path: Path, owner: Any) -> None:
        self.pid_file = tmp_path / f"child-{id(self)}.pid"
        spec = ShellSpec(command=f'sleep 30 & echo $! > "{self.pid_file}"; wait')
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(spec, owner), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        # The child may write its pid before shell.run has registered the command for its
        # owner (Popen returns to the registering thread after the child runs): wait for both.
        while not (self.pid_file.exists() and self.pid_file.read_text().strip() and self._registered(owner)):
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.02)
        self.child = int(self.pid_file.read_text())

    @staticmethod
    def _registered(owner: Any) -> bool:
        with shell._live_lock:
            return owner in shell._live.values()

    def _run(self, spec: ShellSpec, owner: Any) -> None:
        try:
            shell.run(spec, shell.OutputTail(), owner=owner)
        except BaseException as exc:  # the test reads it
            self.error = exc

    def ended(self, within: float = 5.0) -> bool:
        self.thread.join(within)
        return not self.thread.is_alive()


class FakeRequest:
    """What stop_cancelled reads of Celery's active request."""

    def __init__(self, task_id: str, run_id: str, step: str, number: int) -> None:
        self.id = task_id
        self.args = [run_id, step, number]
        self.terminated_with: str | None = None

    def terminate(self, pool: Any, signal: str | None = None) -> None:
        self.terminated_with = signal


def pool_of(kind: str) -> Any:
    """A Celery pool object of the given kind, not started (only its type is read)."""
    import importlib

    cls = importlib.import_module(f"celery.concurrency.{kind}").TaskPool
    return object.__new__(cls)


def test_stop_for_stops_only_the_command_of_that_attempt(tmp_path):
    # Given two commands running for two attempts
    mine = RunningCommand(tmp_path, ("r1", "a", 1))
    other = RunningCommand(tmp_path, ("r1", "b", 1))
    try:
        # When the first attempt's commands are stopped
        assert shell.stop_for(("r1", "a", 1)) == 1
        # Then its command fails as killed, its child gone; the other one still runs
        assert mine.ended(), "shell.run did not return"
        assert isinstance(mine.error, shell.ShellFailed) and "killed by SIGTERM" in str(mine.error)
        assert pid_gone(mine.child)
        assert other.thread.is_alive() and not pid_gone(other.child, within=0.2)
        assert shell.stop_for(("r1", "a", 1)) == 0  # nothing left for it
        assert shell.stop_for(None) == 0  # commands of unknown attempts are never matched
    finally:
        shell.stop_for(("r1", "b", 1))
        assert other.ended()


def test_stop_all_kills_every_command_within_its_grace(tmp_path):
    commands = [RunningCommand(tmp_path, ("r2", f"s{i}", 1)) for i in range(2)]
    started = time.monotonic()
    assert shell.stop_all(0.3) == 2
    assert time.monotonic() - started < 1.0
    assert all(c.ended() for c in commands)
    assert all(pid_gone(c.child, within=1.0) for c in commands)


@pytest.mark.parametrize(
    "kind, python_outcome",
    [("thread", f"{NOT_INTERRUPTIBLE}:threads"), ("solo", f"{NOT_INTERRUPTIBLE}:solo"), ("prefork", TERMINATED)],
)
def test_stop_cancelled_does_what_each_pool_allows(tmp_path, kind, python_outcome):
    # Given a worker running a shell step and a Python step, and a third task not cancelled
    command = RunningCommand(tmp_path, ("r3", "sh", 1))
    shell_req = FakeRequest("t-shell", "r3", "sh", 1)
    python_req = FakeRequest("t-python", "r3", "py", 1)
    kept = FakeRequest("t-kept", "r4", "py", 1)
    # When the cancel's broadcast names the first two
    got = stop_cancelled(["t-shell", "t-python", "t-elsewhere"], [shell_req, python_req, kept], pool_of(kind))
    # Then the shell's group is stopped on any pool; the Python step is terminated on
    # prefork only (Celery's terminate raises NotImplementedError elsewhere)
    assert got == {"t-shell": SHELL_STOPPED, "t-python": python_outcome}
    assert command.ended() and pid_gone(command.child)
    assert shell_req.terminated_with is None and kept.terminated_with is None
    assert python_req.terminated_with == ("SIGTERM" if kind == "prefork" else None)


def test_the_heartbeat_stops_the_commands_of_attempts_no_longer_the_workers(tmp_path, sqlite_store):
    # Given a worker runtime running a shell command for an attempt the store does not
    # hold as running on this worker (an operator cancelled it)
    from flowkit.config import Settings
    from flowkit.execution.runtime import WorkerRuntime

    rt = WorkerRuntime(settings=Settings.from_env(), store=sqlite_store, events=None)
    key = ("r5", "sh", 1)
    command = RunningCommand(tmp_path, key)
    rt._running.add(key)
    # When one heartbeat finds that attempt lost, the command still runs (the beat may have
    # raced the attempt's own finish, and the cancel's broadcast should answer first)
    lost = sqlite_store.heartbeat([key], rt.name)
    assert lost == [key]
    rt._stop_lost(lost)
    assert not command.ended(within=0.3)
    # Then the next beat that finds it lost stops its command
    rt._stop_lost(sqlite_store.heartbeat([key], rt.name))
    assert command.ended() and pid_gone(command.child)
    # and a cancel's broadcast that arrives after the step ended is still told so
    from flowkit.store.machine import task_id_for

    assert stop_cancelled([task_id_for(*key)], [], pool_of("thread")) == {task_id_for(*key): SHELL_STOPPED}


def test_the_cancel_line_says_what_was_stopped_and_what_was_not():
    cancelled_from = {
        "q1": "queued",
        "q2": "queued",
        "s1": "running",
        "p1": "running",
        "t1": "running",
        "x1": "running",
    }
    stopped = {"s1": SHELL_STOPPED, "p1": f"{NOT_INTERRUPTIBLE}:threads", "t1": TERMINATED}
    assert stopped_line(cancelled_from, stopped) == (
        "2 queued attempts revoked; 1 shell step's process group killed; 1 running step terminated "
        "(SIGTERM to its prefork pool process); 1 Python step on a threads pool cannot be "
        "interrupted: its result will be discarded; 1 running attempt not stopped: no worker "
        "answered (a solo pool answers only between steps; a shell step's command is stopped at "
        "its worker's next heartbeat); the outcome will be discarded"
    )
    assert stopped_line({"q1": "queued"}, {}) == "1 queued attempt revoked"
    assert stopped_line({}, {}) == "nothing was running or queued"


def test_no_command_outlives_these_tests():
    # (each test above checked its commands' children gone; none stays registered either).
    # Only this file's attempts are looked at: another file's worker thread in this process
    # may still be ending a shell step of its own.
    mine = {("r1", "a", 1), ("r1", "b", 1), ("r2", "s0", 1), ("r2", "s1", 1), ("r3", "sh", 1), ("r5", "sh", 1)}
    with shell._live_lock:
        left = [owner for owner in shell._live.values() if owner in mine]
    assert not left, f"commands still registered: {left}"
