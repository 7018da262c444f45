"""Per-attempt capture of a step's own output: its ``ctx.log`` records, what it prints to
stdout/stderr while it runs, and a shell step's output. Not public API.

Each attempt gets a :class:`CapturedOutput` (the tail of its output, at most
``FLOWKIT_LOG_CAP_BYTES``). Output is routed to it by the thread that runs the attempt:
``sys.stdout``/``sys.stderr`` are wrapped once per process by a proxy that looks the
current thread up (never swapped per attempt, so two attempts on a threads pool each keep
their own), and one handler on the ``flowkit.step`` logger does the same for log records.
Everything still reaches the worker's own streams as before.

While an attempt runs, one thread per process writes the output of attempts that printed
something new to the store every :data:`FLUSH_SECONDS` (``flowkit logs --follow`` reads it);
an attempt that prints nothing costs two dict operations and no statement.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from ..execution.shell import OutputTail

log = logging.getLogger(__name__)

#: How often a running attempt's new output is written to the store (at most one
#: statement per attempt with new output per period).
FLUSH_SECONDS = 1.0
#: The logger whose records are a step's own (``ctx.log`` is ``flowkit.step.<flow>.<step>``).
STEP_LOGGER = "flowkit.step"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class CapturedOutput(OutputTail):
    """An attempt's output tail that knows when it changed (for the periodic write)."""

    def __init__(self, limit: int, save: Callable[[str], Any] | None = None) -> None:
        super().__init__(limit)
        self.save = save
        self.version = 0
        self.saved_version = 0
        self._partial: dict[str, str] = {}

    def add(self, line: str) -> None:
        super().add(line)
        self.version += 1

    def write(self, text: str, stream: str) -> None:
        """Text written to a stream: whole lines go to the tail, the rest waits for its end."""
        pending = self._partial.pop(stream, "") + text
        *lines, rest = pending.split("\n")
        for line in lines:
            self.add(line)
        if rest:
            self._partial[stream] = rest

    def close(self) -> None:
        """Keep what was written without a final newline."""
        for stream in list(self._partial):
            self.add(self._partial.pop(stream))

    def kept_anything(self) -> bool:
        return self.version > 0


class _ThreadRoutedStream:
    """Stands in for sys.stdout or sys.stderr: writes also go to the capture of the attempt
    the current thread runs, if any."""

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name

    def write(self, text: str) -> int:
        out = _by_thread.get(threading.get_ident())
        if out is not None and isinstance(text, str):
            out.write(text, self._name)
        written: int = self._inner.write(text)
        return written

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty, ...
        return getattr(self._inner, name)


class _CaptureHandler(logging.Handler):
    """Sends a step's log records to the capture of the attempt the thread runs."""

    def emit(self, record: logging.LogRecord) -> None:
        out = _by_thread.get(threading.get_ident())
        if out is None:
            return
        try:
            for line in self.format(record).split("\n"):
                out.add(line)
        except Exception:
            self.handleError(record)


_by_thread: dict[int, CapturedOutput] = {}
_live: dict[Hashable, CapturedOutput] = {}
_lock = threading.Lock()
_installed_pid: int | None = None
_flusher_pid: int | None = None


def _install() -> None:
    """Wrap the process's streams (again if something replaced them since: Celery's
    redirect, a test runner) and add the log handler once per process."""
    global _installed_pid
    if not isinstance(sys.stdout, _ThreadRoutedStream):
        sys.stdout = _ThreadRoutedStream(sys.stdout, "stdout")
    if not isinstance(sys.stderr, _ThreadRoutedStream):
        sys.stderr = _ThreadRoutedStream(sys.stderr, "stderr")
    if _installed_pid == os.getpid():
        return
    with _lock:
        step_log = logging.getLogger(STEP_LOGGER)
        if not any(isinstance(h, _CaptureHandler) for h in step_log.handlers):
            handler = _CaptureHandler()
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            step_log.addHandler(handler)
        if step_log.getEffectiveLevel() > logging.INFO:  # ctx.log.info is the step's own log
            step_log.setLevel(logging.INFO)
        _installed_pid = os.getpid()


@contextmanager
def capturing(key: Hashable, limit: int, save: Callable[[str], Any] | None = None) -> Iterator[CapturedOutput]:
    """Capture what the current thread's attempt ``key`` prints and logs; ``save`` (if given)
    is called with the output so far every :data:`FLUSH_SECONDS` while it has new output."""
    _install()
    out = CapturedOutput(limit, save)
    ident = threading.get_ident()
    _by_thread[ident] = out
    if save is not None:
        _live[key] = out
        _start_flusher()
    try:
        yield out
    finally:
        _by_thread.pop(ident, None)
        _live.pop(key, None)
        out.close()


def _start_flusher() -> None:
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_forever, name="flowkit-output-flush", daemon=True).start()


def _flush_forever() -> None:
    stop = threading.Event()
    while not stop.wait(FLUSH_SECONDS):
        flush_once()


def flush_once() -> None:
    """Write the output of every live attempt that has new output since its last write."""
    for key, out in list(_live.items()):
        version = out.version
        if version == out.saved_version or out.save is None:
            continue
        try:
            out.save(out.text())
            out.saved_version = version
        except Exception as exc:  # the finish writes the whole tail anyway
            log.warning("attempt %s: could not write its output so far: %s", key, exc)
