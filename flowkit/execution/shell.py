"""Shell steps: ``Flow.shell(name, "command", ...)`` runs ``/bin/sh -c command`` on a worker.

The command runs in a process group of its own, with stdout and stderr captured together;
the last :data:`OUTPUT_TAIL_BYTES` of its output are kept with the attempt. The attempt
fails on an exit code outside ``success_codes`` or on an output line matching one of the
``fail_on`` patterns (even when the command exits 0). Whatever ends the attempt (the
command exiting, its timeout, the pool child being told to stop, the worker exiting), the
whole process group is stopped: SIGTERM, then SIGKILL after :data:`KILL_GRACE_SECONDS`.
No process the command started outlives its attempt.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import IO, Any

from ..errors import DefinitionError
from ..spec import ShellSpec
from . import timeouts

#: How much of a command's output each attempt keeps (its end).
OUTPUT_TAIL_BYTES = 64 * 1024
#: Output lines given back in the step's result (the full tail is on the attempt).
RESULT_LINES = 10
#: Between SIGTERM and SIGKILL when a command's process group is stopped.
KILL_GRACE_SECONDS = 2.0
_POLL_SECONDS = 0.05


class ShellFailed(Exception):
    """The command exited with a code outside success_codes, or printed a fail_on line."""


# -- definition checks (called by the builder) -----------------------------------------------
def check_definition(
    command: Any, env: Any, cwd: Any, fail_on: Any, success_codes: Any, *, who: str, where: dict[str, Any]
) -> ShellSpec:
    """The arguments of ``Flow.shell`` as a :class:`ShellSpec`, or a DefinitionError that
    says which one is wrong and how to fix it."""
    if not isinstance(command, str) or not command.strip():
        raise DefinitionError(
            f'{who}: the command must be a non-empty string, like "make build"; got {command!r}', **where
        )
    pairs: list[tuple[str, str]] = []
    if env is not None:
        if not isinstance(env, Mapping):
            raise DefinitionError(
                f'{who}: env= takes a dict of names to strings, like {{"MODE": "full"}}; '
                f"got {type(env).__name__} {env!r}",
                **where,
            )
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
                raise DefinitionError(f"{who}: env= name {key!r} is not an environment variable name", **where)
            if not isinstance(value, str):
                raise DefinitionError(
                    f"{who}: env={{{key!r}: {value!r}}}: values must be strings; write {str(value)!r}", **where
                )
            pairs.append((key, value))
    if cwd is not None:
        if not isinstance(cwd, (str, os.PathLike)) or not str(os.fspath(cwd)):
            raise DefinitionError(f"{who}: cwd= takes a directory path (a string), not {cwd!r}", **where)
        cwd = str(os.fspath(cwd))
    patterns = _strings(fail_on, "fail_on", who, where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DefinitionError(
                f"{who}: fail_on pattern {pattern!r} is not a valid regular expression "
                f"({exc}); escape special characters with re.escape()",
                **where,
            ) from None
    codes = _codes(success_codes, who, where)
    return ShellSpec(command=command, env=tuple(sorted(pairs)), cwd=cwd, fail_on=patterns, success_codes=codes)


def _strings(value: Any, label: str, who: str, where: dict[str, Any]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise DefinitionError(
            f"{who}: {label}= takes a regular expression or a list of them, not {type(value).__name__} {value!r}",
            **where,
        )
    items = list(items)
    for item in items:
        if not isinstance(item, str):
            raise DefinitionError(f"{who}: {label}= takes regular expressions (strings), not {item!r}", **where)
    return tuple(items)


def _codes(value: Any, who: str, where: dict[str, Any]) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    bad = not isinstance(items, Iterable) or isinstance(items, (str, bytes, Mapping))
    items = [] if bad else list(items)
    if bad or not items or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in items):
        raise DefinitionError(
            f"{who}: success_codes={value!r} must be exit codes: whole numbers from 0 "
            "to 255, e.g. success_codes=(0, 3)",
            **where,
        )
    return tuple(items)


# -- running a command --------------------------------------------------------------------------
class OutputTail:
    """The last ``limit`` bytes of a command's output, as whole lines where possible."""

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit = limit
        self._lines: deque[str] = deque()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        line = line[-self.limit :]
        with self._lock:
            self._lines.append(line)
            self._size += len(line) + 1
            while self._size > self.limit and len(self._lines) > 1:
                self._size -= len(self._lines.popleft()) + 1

    def last_lines(self, count: int) -> list[str]:
        with self._lock:
            return list(self._lines)[-count:]

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)


class _Group:
    """The process group of one command; stopping it is idempotent."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the shell leads a group of its own

    def _signal(self, signum: int) -> bool:
        try:
            os.killpg(self.pgid, signum)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def alive(self) -> bool:
        """Does any process of the group still run? (Zombies waiting for init do not count.)"""
        self.proc.poll()  # reap the shell, or it lingers in the group as a zombie
        if not self._signal(0):
            return False
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:  # no /proc: a zombie counts as alive, which only costs the grace period
            return True
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == self.pgid and fields[0] not in ("Z", "X"):
                return True
        return False

    def stop(self) -> None:
        """SIGTERM every process of the group; SIGKILL those left after the grace period."""
        if not self._signal(signal.SIGTERM):
            return
        end = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < end:
            if not self.alive():
                return
            time.sleep(_POLL_SECONDS)
        self._signal(signal.SIGKILL)

    def stop_soon(self) -> None:
        """SIGTERM now and SIGKILL later, without waiting (from the timeout watchdog)."""
        if self._signal(signal.SIGTERM):
            timer = threading.Timer(KILL_GRACE_SECONDS, lambda: self.alive() and self._signal(signal.SIGKILL))
            timer.daemon = True
            timer.start()


#: The commands running in this process, each with the attempt it runs for (None: unknown).
_live: dict[_Group, Hashable] = {}
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """The worker is exiting: stop the commands its steps still run."""
    with _live_lock:
        groups = list(_live)
    for group in groups:
        group.stop()


#: The owners whose commands :func:`stop_for` stopped lately (newest last), so that the
#: worker can still say so once the step has ended.
_stopped: deque[Hashable] = deque(maxlen=256)


def stop_for(owner: Hashable) -> int:
    """Stop the commands running for ``owner`` (an attempt, as passed to :func:`run`), as a
    timeout does: SIGTERM now, SIGKILL after :data:`KILL_GRACE_SECONDS`. Returns how many
    process groups were told to stop; the step's own wait then returns and the step fails."""
    with _live_lock:
        groups = [g for g, o in _live.items() if o == owner and owner is not None]
        if groups:
            _stopped.append(owner)
    for group in groups:
        group.stop_soon()
    return len(groups)


def stopped_lately() -> list[Hashable]:
    """The owners whose commands :func:`stop_for` stopped lately."""
    with _live_lock:
        return list(_stopped)


def stop_all(grace: float) -> int:
    """Stop every command this process runs within ``grace`` seconds in all: SIGTERM to each
    group, then SIGKILL to those still alive (``flowkit dev`` exiting on Ctrl-C cannot wait
    :data:`KILL_GRACE_SECONDS` per command). Returns how many groups were running."""
    with _live_lock:
        groups = list(_live)
    signalled = [g for g in groups if g._signal(signal.SIGTERM)]
    end = time.monotonic() + grace
    while time.monotonic() < end and any(g.alive() for g in signalled):
        time.sleep(_POLL_SECONDS)
    for group in signalled:
        if group.alive():
            group._signal(signal.SIGKILL)
    return len(signalled)


def run(spec: ShellSpec, tail: OutputTail, owner: Hashable = None) -> dict[str, Any]:
    """Run the command to its end; the result is ``{"exit_code": n, "last_lines": [...]}``.
    ``owner`` (the attempt) lets :func:`stop_for` find the command when the attempt is cancelled.

    Raises :class:`ShellFailed` when the command fails by its exit code or its output; the
    output is in ``tail`` in every case.
    """
    patterns = [re.compile(p) for p in spec.fail_on]
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", spec.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=spec.cwd,
            env={**os.environ, **dict(spec.env)},
            start_new_session=True,
        )
    except OSError as exc:
        where = f" in {spec.cwd}" if spec.cwd else ""
        raise ShellFailed(f"could not start the command{where}: {exc}") from None
    group = _Group(proc)
    with _live_lock:
        _live[group] = owner
    deadline = timeouts.current()
    unregister = deadline.on_expire(group.stop_soon) if deadline is not None else None
    matches: list[tuple[str, str]] = []
    assert proc.stdout is not None
    reader = threading.Thread(
        target=_read, args=(proc.stdout, tail, patterns, matches), name="flowkit-shell-output", daemon=True
    )
    reader.start()
    try:
        while True:  # poll, so that a timeout or a stop request reaches this thread at once
            try:
                code = proc.wait(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        # However this ends, nothing the command started outlives it (and the pipe closes).
        group.stop()
        reader.join(timeout=KILL_GRACE_SECONDS + 1)
        proc.stdout.close()
        if unregister is not None:
            unregister()
        with _live_lock:
            _live.pop(group, None)
    problems = []
    if code not in spec.success_codes:
        problems.append(_describe_exit(code, spec.success_codes))
    if matches:
        pattern, line = matches[0]
        problems.append(f"output line matched fail_on {pattern!r}: {_clip(line)!r}")
    if problems:
        last = tail.last_lines(1)
        shown = f"; last output line: {_clip(last[0])!r}" if last and not matches else ""
        raise ShellFailed("; ".join(problems) + shown)
    return {"exit_code": code, "last_lines": tail.last_lines(RESULT_LINES)}


def _read(stream: IO[bytes], tail: OutputTail, patterns: list[re.Pattern[str]], matches: list[tuple[str, str]]) -> None:
    for raw in iter(lambda: stream.readline(OUTPUT_TAIL_BYTES), b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        tail.add(line)
        if not matches:
            for pattern in patterns:
                if pattern.search(line):
                    matches.append((pattern.pattern, line))
                    break


def _describe_exit(code: int, success: tuple[int, ...]) -> str:
    wanted = "0" if success == (0,) else f"one of {', '.join(map(str, success))} (success_codes)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the command was killed by {name}; it should exit with {wanted}"
    return f"the command exited with {code}; it should exit with {wanted}"


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
