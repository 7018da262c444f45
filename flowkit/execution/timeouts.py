"""A step's ``timeout=``, enforced the same way on every worker pool. Not public API.

Celery's time limits only work on the prefork pool, so flowkit keeps its own: a watchdog
thread per attempt that, when the step's time is up,

1. stops whatever the step started that can be stopped from outside (a shell step's
   process group: see :mod:`flowkit.execution.shell`, which registers itself with :meth:`Deadline.on_expire`);
2. raises :class:`StepTimedOut` in the thread running the step: a real SIGALRM when that is
   the main thread (solo pool, prefork children, the in-process harness), so that a blocking
   ``time.sleep`` or socket read is interrupted; ``PyThreadState_SetAsyncExc`` otherwise
   (threads pool, ``flowkit dev``), which takes effect at the next Python bytecode;
3. if the step has still not returned after a grace period (a thread blocked in C code
   cannot be interrupted), calls the ``on_abandon`` callback, which records the attempt as
   failed; the step's eventual outcome is then discarded by the store's compare-and-set.

On prefork, Celery's hard time limit stays as the last resort: it kills the pool child.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

#: How long a step may take to stop once told it timed out, before its attempt is recorded
#: as failed anyway and whatever it does later is discarded.
ABANDON_GRACE_SECONDS = 1.0


class StepTimedOut(Exception):
    """Raised inside a step whose ``timeout=`` has passed."""


def timeout_message(seconds: float) -> str:
    return f"timed out after {seconds:g} s (timeout= on the step); make it faster or raise the timeout"


class Deadline:
    """``with Deadline(seconds): run_the_step()``; ``seconds=None`` watches nothing.

    ``fired`` tells, after the block, that the time ran out (even if the step swallowed
    the exception and returned); ``abandoned`` that ``on_abandon`` was called.
    """

    def __init__(
        self,
        seconds: float | None,
        *,
        on_abandon: Callable[[], None] | None = None,
        grace: float | None = None,
        name: str = "step",
    ) -> None:
        self.seconds = seconds
        self.grace = ABANDON_GRACE_SECONDS if grace is None else grace
        self.name = name
        self.fired = False
        self.abandoned = False
        self._on_abandon = on_abandon
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._exited = False
        self._async_pending = False
        self._thread_id = 0
        self._uses_alarm = False
        self._old_handler: Callable[[int, FrameType | None], object] | int | None = None
        self._watchdog: threading.Thread | None = None

    # -- what the step may register ------------------------------------------------------
    def on_expire(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` (from the watchdog thread) when the time is up; returns a function
        that unregisters it. A hook added after the deadline fired runs at once."""
        with self._lock:
            fired = self.fired
            if not fired:
                self._hooks.append(hook)
        if fired:
            _safely(hook)

        def remove() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return remove

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> Deadline:
        _current.deadline = self
        if self.seconds is None:
            return self
        self._thread_id = threading.get_ident()
        if threading.current_thread() is threading.main_thread():
            try:
                self._old_handler = signal.signal(signal.SIGALRM, self._alarm)
                self._uses_alarm = True
            except (ValueError, OSError):  # no SIGALRM here: fall back on the async exception
                self._uses_alarm = False
        self._watchdog = threading.Thread(target=self._watch, name=f"flowkit-timeout-{self.name}", daemon=True)
        self._watchdog.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._exited = True
            if self._async_pending:
                # Not delivered yet: it must not surface later, in the worker's own code.
                _set_async_exc(self._thread_id, None)
                self._async_pending = False
        self._done.set()
        if self._uses_alarm:
            self._restore_alarm_handler()
        _current.deadline = None

    def _restore_alarm_handler(self) -> None:
        old = self._old_handler if self._old_handler is not None else signal.SIG_DFL
        if not self.fired:
            signal.signal(signal.SIGALRM, old)
            return
        # The watchdog sent SIGALRM: if the kernel has not delivered it yet, it must not reach
        # the old handler (SIG_DFL would kill the worker). Block it, drop it, then restore.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            signal.sigtimedwait({signal.SIGALRM}, 0)
            signal.signal(signal.SIGALRM, old)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})

    # -- the watchdog ----------------------------------------------------------------------
    def _watch(self) -> None:
        assert self.seconds is not None
        if self._done.wait(self.seconds):
            return
        with self._lock:
            if self._exited:
                return
            self.fired = True
            hooks = list(self._hooks)
        for hook in hooks:  # stop child processes first, so the step's wait returns
            _safely(hook)
        with self._lock:
            if not self._exited:
                if self._uses_alarm:
                    signal.pthread_kill(self._thread_id, signal.SIGALRM)
                else:
                    _set_async_exc(self._thread_id, StepTimedOut)
                    self._async_pending = True
        if self._done.wait(self.grace) or self._on_abandon is None:
            return
        self.abandoned = True
        log.error(
            "%s: still running %g s after its %g s timeout; recording it as failed and "
            "discarding whatever it does later",
            self.name,
            self.grace,
            self.seconds,
        )
        _safely(self._on_abandon)

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.fired and not self._exited:
            raise StepTimedOut(timeout_message(self.seconds or 0))


class _Current(threading.local):
    deadline: Deadline | None = None


_current = _Current()


def current() -> Deadline | None:
    """The deadline of the step running in this thread, if any."""
    return _current.deadline


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # a failing hook must not stop the others, nor the watchdog
        log.exception("timeout handling failed")
