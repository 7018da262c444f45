"""Runs one step attempt on a worker and reports to the store. Not public API.

Workers never decide what runs next: they claim an attempt, run the user's function
with a context, record the outcome, and tell the scheduler through an event.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import threading
import time
import traceback as tb_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import jsonsafe, refs, secrets, shell, success, timeouts
from .config import Settings
from .context import StepContext
from .dispatch.base import Backpressure
from .errors import ResultTooLarge, Retry, Skip
from .loader import exec_module_source, flows_in
from .spec import FlowSpec, split_instance
from .states import AttemptState
from .store.machine import Effects, task_id_for
from .store.sql import Claim, SqlStore

log = logging.getLogger(__name__)

_V = TypeVar("_V")

#: How long a worker trusts its reading of the global in-flight cap.
GLOBAL_CAP_CACHE_SECONDS = 5.0


@dataclass
class WorkerRuntime:
    """Per-process state of a worker: settings, store, code and spec caches, heartbeats."""

    settings: Settings
    store: SqlStore
    events: Any  # EventBus
    #: Publishes fast-followed attempts (None: never fast-follow, leave it to the scheduler).
    dispatcher: Any = None
    backpressure: Backpressure | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _global_cap: tuple[float, int | None] = (float("-inf"), None)
    _modules: dict[tuple[str, str], Any] = field(default_factory=dict)
    _specs: dict[tuple[str, str], FlowSpec] = field(default_factory=dict)
    _callables: dict[tuple[str, str, str], Callable[..., Any]] = field(default_factory=dict)
    _running: set[tuple[str, str, int]] = field(default_factory=set)
    #: Task ids this process published after its finishes queued them: the heartbeat
    #: confirms them to the store (one statement a beat, not one a publish).
    _published: list[str] = field(default_factory=list)
    _hb_thread: threading.Thread | None = None
    #: Attempts the last heartbeat found no longer this worker's.
    _lost_last_beat: set[tuple[str, str, int]] = field(default_factory=set)
    _hb_pid: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_identity(self) -> None:
        """A forked pool child is a new worker: its own name and heartbeat thread."""
        if self._hb_pid != os.getpid():
            self.name = f"{socket.gethostname()}:{os.getpid()}"
            self._running = set()
            self._published = []
            self._hb_pid = os.getpid()
            self._hb_thread = threading.Thread(target=self._beat, name="flowkit-heartbeat",
                                               daemon=True)
            self._hb_thread.start()

    def _beat(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.settings.heartbeat_seconds):
            with self._lock:
                keys = list(self._running)
            try:
                lost = self.store.heartbeat(keys, self.name)
                self.confirm_published()
            except Exception as exc:  # a missed beat is survivable; a dead thread is not
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)
                continue
            self._stop_lost(lost)

    def _stop_lost(self, lost: list[tuple[str, str, int]]) -> None:
        """Stop the shell commands of attempts that are no longer this worker's (cancelled,
        or taken over): on every pool, and even when the cancel's broadcast did not reach
        this process (a solo pool reads control messages only between steps).

        Only an attempt found lost by two beats in a row: one beat may race its own finish,
        and the cancel's broadcast, which answers the operator with what it stopped, should
        come first."""
        confirmed = [key for key in lost if key in self._lost_last_beat]
        self._lost_last_beat = set(lost)
        for key in confirmed:
            with self._lock:
                still_here = key in self._running  # not just finished meanwhile
            if still_here and shell.stop_for(key):
                log.warning("run %s step %s: attempt %s is no longer this worker's (cancelled or "
                            "taken over); its command's process group was stopped", *key)

    def published(self, task_ids: list[str]) -> None:
        """These attempts, queued by this process's finishes, went out to the broker."""
        with self._lock:
            self._published.extend(task_ids)
        if self._hb_thread is None:  # no heartbeat thread (tests, the inline harness)
            self.confirm_published()

    def confirm_published(self) -> None:
        """Tell the store what went out since the last beat (kept for the next if it fails)."""
        with self._lock:
            ids, self._published = self._published, []
        try:
            self.store.confirm_published(ids)
        except Exception:
            with self._lock:
                self._published = ids + self._published
            raise

    def global_cap(self) -> int | None:
        """The scheduler's global in-flight cap, as the ledger holds it (cached a few seconds):
        an attempt queued here must hold a slot of it, so only the scheduler queues then."""
        read_at, cap = self._global_cap
        if time.monotonic() - read_at > GLOBAL_CAP_CACHE_SECONDS:
            try:
                rows = {r["key"]: r["capacity"] for r in self.store.limits()}
                cap = rows.get("global") if "global" in rows else (self.settings.max_in_flight or None)
            except Exception as exc:  # keep the last value; the finish path reports store trouble
                log.warning("worker %s: cannot read the global cap: %s", self.name, exc)
            self._global_cap = (time.monotonic(), cap)
        return cap

    def fast_follow_gate(self) -> Callable[[Any], bool] | None:
        """Which ready downstream steps this worker may queue itself, for one finish: at most
        ``fast_follow_max``, and per queue no more than fit under the low watermark (each
        one consented to counts, whether it becomes ready or not)."""
        if self.dispatcher is None:
            return None
        budget = [self.settings.fast_follow_max]
        taken: dict[str, int] = {}
        bp = self.backpressure

        def gate(step: Any) -> bool:
            if budget[0] <= 0:
                return False
            queue = step.queue or self.settings.default_queue
            if bp is not None and not bp.allow_fast(queue, taken.get(queue, 0) + 1):
                return False
            budget[0] -= 1
            taken[queue] = taken.get(queue, 0) + 1
            return True

        return gate

    def spec(self, flow: str, version: str) -> FlowSpec:
        key = (flow, version)
        if key not in self._specs:
            self._specs[key] = self.store.flow_spec(flow, version)
        return self._specs[key]

    def flow_for(self, flow: str, version: str) -> Any:
        """The ``Flow`` object of ``flow`` from the module source ``version`` is pinned to."""
        key = (flow, version)
        module = self._modules.get(key)
        if module is None:
            path, source = self.store.flow_source(flow, version)
            module = exec_module_source(path, source, os.path.abspath(self.settings.dags_folder),
                                        modules=self.store.flow_modules(flow, version))
            self._modules[key] = module
        for candidate in flows_in(module):
            if candidate.name == flow:
                return candidate
        raise LookupError(f'version {version} of its module defines no flow "{flow}"')

    def callable_for(self, flow: str, version: str, step: str) -> Callable[..., Any]:
        """The step function from the exact module source the run is pinned to
        (docs/design-notes.md#pinned-code-per-run; cached: looked up per step)."""
        fn = self._callables.get((flow, version, step))
        if fn is None:
            fn = self._callables[(flow, version, step)] = self.flow_for(flow, version).callable_for(step)
        return fn

    def success_check_for(self, flow: str, version: str, step: str) -> Callable[[Any], Any] | None:
        """The step's success_when= callable, from the pinned module source."""
        check: Callable[[Any], Any] | None = self.flow_for(flow, version).success_check_for(step)
        return check


def _call(fn: Callable[..., Any], ctx: StepContext) -> Any:
    try:
        wants = _wants_ctx(fn)
    except TypeError:  # an unhashable callable object: not cached
        wants = _wants_ctx.__wrapped__(fn)
    return fn(ctx) if wants else fn()


@functools.lru_cache(maxsize=4096)
def _wants_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes the context (read once per function: a signature costs ~50 us)."""
    try:
        return any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            for p in inspect.signature(fn).parameters.values()
        )
    except (TypeError, ValueError):
        return True


def encode_result(value: Any, *, run_id: str, step: str, cap: int,
                  max_depth: int = jsonsafe.MAX_DEPTH) -> str:
    """The JSON a step's result is stored as, with every known secret masked (``_masked``);
    raises a one-line error for a result that is not JSON, nested too deep or too large."""
    where = f"run {run_id} step {step}"
    # Before dumps: json recurses per level, and a value ~1,000 deep raises RecursionError
    # here or, stored, in every reader of the downstream steps.
    depth = jsonsafe.nesting_depth(value, stop_after=MAX_RESULT_DEPTH_WALK)
    problem = jsonsafe.shape_problem(depth=depth, max_depth=max_depth)
    if problem is not None:
        raise ResultTooLarge(
            f"{where}: result {problem} (FLOWKIT_MAX_JSON_DEPTH); flatten it, or write the data "
            'elsewhere and return flowkit.Ref("s3://...") to it', step=step)
    try:
        text = jsonsafe.dumps(value, sort_keys=True, default=_json_default)
    except jsonsafe.NonFiniteNumberError as exc:
        raise ValueError(f"{where}: result contains NaN/Infinity at {exc.path}; return None "
                         "or a string instead") from None
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where}: the result is not JSON-serialisable ({exc}); return "
            "dicts, lists, strings, numbers, booleans or None"
        ) from None
    text = _masked_json(text)
    size = len(text.encode())
    if size > cap:
        raise ResultTooLarge(
            f"{where}: result is {size:,} bytes, over the {cap:,}-byte cap "
            "(FLOWKIT_MAX_RESULT_BYTES); write the data elsewhere (a file, an object store) and "
            'return flowkit.Ref("s3://...") to it', step=step)
    return text


#: encode_result measures a result's depth down to this many levels (a cyclic value ends there).
MAX_RESULT_DEPTH_WALK = 10_000


def _masked(value: _V) -> _V:
    """What the worker stores (result, error, traceback, output) with every known secret as
    ``***``: the one masking function all of them go through."""
    masked: _V = secrets.mask_stored(value)
    return masked


def _masked_json(text: str) -> str:
    """A result's JSON text, masked as data, never as text (a secret matching part of a
    number must not make it invalid JSON, and an escaped one must still be found). Parsed
    again only in a process that knows a secret."""
    secrets.register_configured_secrets()
    if not secrets.any_registered():
        return text
    parsed = jsonsafe.loads(text)
    masked = _masked(parsed)
    return text if masked == parsed else jsonsafe.dumps(masked, sort_keys=True)


def _json_default(value: Any) -> Any:
    import datetime as dt
    import decimal
    import pathlib

    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (pathlib.PurePath, decimal.Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, refs.Ref):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def run_attempt(rt: WorkerRuntime, run_id: str, step: str, number: int) -> str:
    """Claim and run one attempt; returns what happened (for logs and tests)."""
    rt.refresh_identity()
    s = rt.settings
    claim = _claim(rt, run_id, step, number)
    if claim.outcome in ("done", "duplicate", "unknown"):
        log.info("run %s step %s: attempt %s not run here (%s: %s)", run_id, step, number,
                 claim.outcome, claim.detail)
        return claim.outcome
    if claim.outcome == "poison":
        log.error("run %s step %s: attempt %s %s", run_id, step, number, claim.detail)
        if claim.effects is not None:  # publishes its callbacks and wakes the scheduler
            _after_commit(rt, run_id, step, number, claim.effects)
        else:
            _notify(rt, run_id, step, number)
        return "poison"

    key = (run_id, step, number)
    with rt._lock:
        rt._running.add(key)
    state, result_json, error, trace, retry_delay = AttemptState.SUCCESS, None, None, None, None
    datasets: list[tuple[str, str]] = []
    chosen: list[str] | None = None
    spec = None
    tail: shell.OutputTail | None = None
    deadline: timeouts.Deadline | None = None
    try:
        spec = rt.spec(claim.flow, claim.version)
        step_spec = spec.step(step)
        secrets.register_secret_params(spec, claim.params)  # masked in this process's logs
        upstream = claim.upstream or {}
        if step_spec.compensates:  # a compensation gets the result of the step it undoes
            upstream = rt.store.results(run_id, [step_spec.compensates])
        defined, index = split_instance(step)  # an instance of a map step runs its map step's fn
        ctx = StepContext(
            flow=claim.flow, run_id=run_id, step=step, attempt=number, compensates=step_spec.compensates,
            params=claim.params or {}, upstream=refs.revive(upstream), version=claim.version,
            idempotency_key=f"{run_id}:{step}",
            log=logging.getLogger(f"flowkit.step.{claim.flow}.{defined}"),
            item=claim.item, index=index,
        )
        log.debug("run %s step %s: attempt %s started (delivery %s)", run_id, step, number,
                  claim.deliveries)  # the audit trail has it; INFO costs ~0.1 ms a step
        deadline = timeouts.Deadline(
            step_spec.timeout_seconds, name=f"run {run_id} step {step} attempt {number}",
            on_abandon=lambda: _abandon(rt, run_id, step, number, spec))
        with deadline:
            value: Any
            if step_spec.shell is not None:
                tail = shell.OutputTail()
                value = shell.run(step_spec.shell, tail, owner=key)
            else:
                value = _call(rt.callable_for(claim.flow, claim.version, defined), ctx)
            if step_spec.kind == "branch":
                value = chosen = _check_branch(spec, step, value)
            if step_spec.success_when is not None:
                check = rt.success_check_for(claim.flow, claim.version, defined)
                if check is not None:
                    success.check(check, value, step=step)
        if deadline.fired:  # the step caught StepTimedOut and returned: still a timeout
            raise timeouts.StepTimedOut()
        result_json = encode_result(value, run_id=run_id, step=step, cap=s.max_result_bytes,
                                    max_depth=s.max_json_depth)
        datasets = [(u, "read") for u in step_spec.reads] + [(u, "write") for u in step_spec.writes]
    except Skip as exc:
        state, error = AttemptState.SKIPPED, exc.reason
    except Retry as exc:
        state, error, retry_delay = AttemptState.FAILED, f"retry requested: {exc.reason}", exc.delay
    except Exception as exc:
        state, trace = AttemptState.FAILED, _format_traceback()
        if (deadline is not None and deadline.fired) or isinstance(exc, timeouts.StepTimedOut) \
                or type(exc).__name__ == "SoftTimeLimitExceeded":
            timeout = rt.spec(claim.flow, claim.version).step(step).timeout_seconds or 0
            error = timeouts.timeout_message(timeout)
        elif isinstance(exc, (shell.ShellFailed, success.NotSuccessful)):
            error, trace = str(exc), None  # says all there is; our own frames would be noise
        else:
            error = describe_exception(exc)
    except (SystemExit, KeyboardInterrupt) as exc:
        if _is_interruption(exc):
            # The worker is being stopped (SIGTERM to the pool, a warm shutdown): not the
            # step's failure. Put the attempt back; it runs again.
            with rt._lock:
                rt._running.discard(key)
            _record_interruption(rt, run_id, step, number, exc)
            raise
        state, error = AttemptState.FAILED, f"the step called sys.exit({exc.code!r})"  # type: ignore[union-attr]
    error, trace = _storable(_masked(error)), _storable(_masked(trace))
    output = _storable(_masked(tail.text())) if tail is not None else None
    try:
        effects = _until_stored(
            f"run {run_id} step {step}: recording attempt {number} ({state.value})",
            lambda: rt.store.finish_attempt(
                run_id, step, number, worker=rt.name, state=state, result_json=result_json,
                error=error, traceback=trace, retry_delay=retry_delay, datasets=datasets, spec=spec,
                chosen=chosen, gate=rt.fast_follow_gate(), global_cap=rt.global_cap(), output=output,
                publish=lambda items: _publish(rt, items)))
    finally:
        with rt._lock:
            rt._running.discard(key)
    if effects is None:
        if deadline is not None and deadline.abandoned:
            log.warning("run %s step %s: attempt %s ended after it was recorded as timed out; "
                        "outcome (%s) discarded", run_id, step, number, state.value)
        else:
            row = _attempt_row(rt, run_id, step, number)
            if row is not None and row["state"] == AttemptState.CANCELLED.value:
                log.warning("run %s step %s: attempt %s ended (%s) after an operator cancelled it; "
                            "outcome discarded", run_id, step, number, state.value)
                return "cancelled"
            log.warning("run %s step %s: attempt %s %s; outcome (%s) discarded", run_id, step, number,
                        _who_has(row), state.value)
        return "lost_claim"
    # A success is DEBUG: Celery's own line names the task (<flow>.<step>) and the audit
    # trail has it; at INFO it cost about 20 us a step. Failures and skips stay at INFO.
    log.log(logging.DEBUG if state == AttemptState.SUCCESS else logging.INFO,
            "run %s step %s: attempt %s %s%s", run_id, step, number, state.value,
            f" ({error})" if error else "")
    _after_commit(rt, run_id, step, number, effects)
    return state.value


def _abandon(rt: WorkerRuntime, run_id: str, step: str, number: int, spec: FlowSpec | None) -> None:
    """A step that timed out and did not stop: record its attempt as failed now (from the
    timeout watchdog); its later outcome loses the compare-and-set and is discarded."""
    timeout = spec.step(step).timeout_seconds or 0 if spec is not None else 0
    effects = rt.store.finish_attempt(
        run_id, step, number, worker=rt.name, state=AttemptState.FAILED,
        error=timeouts.timeout_message(timeout) + " (it did not stop; its outcome will be discarded)",
        spec=spec, gate=rt.fast_follow_gate(), global_cap=rt.global_cap())
    if effects is not None:
        log.error("run %s step %s: attempt %s %s", run_id, step, number, timeouts.timeout_message(timeout))
        _after_commit(rt, run_id, step, number, effects)
def _attempt_state(rt: WorkerRuntime, run_id: str, step: str, number: int) -> str | None:
    row = _attempt_row(rt, run_id, step, number)
    return None if row is None else str(row["state"])


def _attempt_row(rt: WorkerRuntime, run_id: str, step: str, number: int) -> dict[str, Any] | None:
    try:
        return next((a for a in rt.store.attempts(run_id, step) if a["number"] == number), None)
    except Exception:  # only chooses a log line
        return None


def _who_has(row: dict[str, Any] | None) -> str:
    """Why a finish did not find its attempt, as the store tells (for the log line)."""
    if row is None:
        return "could not be read back from the store"
    if row["state"] == AttemptState.RUNNING.value:
        return f"was taken over by worker {row['worker']}"
    return f"is {row['state']} in the store" + (f" (worker {row['worker']})" if row.get("worker") else "")


def describe_exception(exc: BaseException) -> str:
    """``Type: message``, even when the exception's ``__str__`` itself raises."""
    try:
        message = str(exc)
    except Exception as broken:  # a user exception whose __str__ fails must still be recorded
        message = f"<str() of the exception raised {type(broken).__name__}>"
    return f"{type(exc).__name__}: {message}"


def _format_traceback() -> str:
    try:
        return tb_module.format_exc(limit=30)
    except Exception:  # formatting calls __str__ too
        return "<the traceback could not be formatted>"


def _storable(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL bytes: keep them visible, escaped."""
    return text.replace("\x00", "\\x00") if text and "\x00" in text else text


def _is_interruption(exc: BaseException) -> bool:
    """A SystemExit raised because the worker process is being stopped, not by the step."""
    if type(exc) is not SystemExit:
        return True  # KeyboardInterrupt, Celery's WorkerShutdown / WorkerTerminate
    try:
        from billiard.common import terminate_handler_fired

        if terminate_handler_fired():
            return True
    except ImportError:  # an older billiard: the exit code tells (below)
        pass
    return isinstance(exc.code, int) and exc.code < 0  # billiard: sys.exit(-(256 - signum))


def _record_interruption(rt: WorkerRuntime, run_id: str, step: str, number: int,
                         exc: BaseException) -> None:
    reason = (f"interrupted on {rt.name} ({type(exc).__name__}{f' {exc.code}' if isinstance(exc, SystemExit) else ''}: "
              "the worker was stopped); not a failure of the step, it runs again")
    try:
        if rt.store.interrupt_attempt(run_id, step, number, worker=rt.name, reason=reason):
            log.warning("run %s step %s: attempt %s %s", run_id, step, number, reason)
        elif _attempt_state(rt, run_id, step, number) == AttemptState.CANCELLED.value:
            log.warning("run %s step %s: attempt %s stopped after an operator cancelled it; not "
                        "run again", run_id, step, number)
    except Exception as store_exc:  # the scheduler sees the silent attempt and sends it again
        log.warning("run %s step %s: attempt %s interrupted; could not record it (%s)", run_id, step,
                    number, store_exc)


_T = TypeVar("_T")


def _until_stored(what: str, fn: Callable[[], _T], give_up_after: float | None = None) -> _T:
    """Call ``fn`` until the store answers: a database outage delays the outcome, never loses
    it (and a claim leaves its message unacknowledged meanwhile). One log line per retry."""
    from sqlalchemy.exc import DBAPIError

    from .errors import StoreUnavailable

    delay, started = 0.25, None
    while True:
        try:
            return fn()
        except (StoreUnavailable, DBAPIError) as exc:
            started = time.monotonic() if started is None else started
            transient = isinstance(exc, StoreUnavailable) or exc.connection_invalidated or \
                type(exc).__name__ in ("OperationalError", "InterfaceError")
            if not transient:
                raise
            if give_up_after is not None and time.monotonic() - started > give_up_after:
                raise
            log.warning("%s: the database did not answer (%s); retrying in %.2g s", what,
                        " ".join(str(getattr(exc, "orig", exc)).split())[:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _claim(rt: WorkerRuntime, run_id: str, step: str, number: int) -> Claim:
    """Claim the attempt (retrying while the store is away).

    A delivery of an attempt that another worker holds with a fresh heartbeat is a
    duplicate (a re-publish, a late redelivery) and is acknowledged at once: if that worker
    dies, the scheduler publishes the attempt again when its heartbeat goes stale, and the
    next delivery takes it over.
    """
    s = rt.settings
    return _until_stored(
        f"run {run_id} step {step}: claiming attempt {number}",
        lambda: rt.store.claim_attempt(run_id, step, number, worker=rt.name, specs=rt._specs,
                                       lost_after=s.lost_after_seconds, max_deliveries=s.max_deliveries),
        give_up_after=s.store_retry_seconds)


def _check_branch(spec: FlowSpec, step: str, value: Any) -> list[str]:
    options = spec.downstream_of(step)
    chosen = [value] if isinstance(value, str) else list(value or [])
    wrong = [c for c in chosen if c not in options]
    if wrong or not all(isinstance(c, str) for c in chosen):
        raise ValueError(
            f"branch step {step} returned {value!r}; it must return the name (or a list of "
            f"names) of its downstream steps: {', '.join(options) or 'none'}")
    return chosen


def _publish(rt: WorkerRuntime, items: list[Any]) -> list[Any]:
    """Publish committed attempts, counted against backpressure; returns those that failed
    (they stay queued in SQL, and the scheduler publishes them again)."""
    if not items:
        return []
    failed: list[Any] = rt.dispatcher.dispatch_many(items)
    missing = {id(item) for item in failed}
    rt.published([item.task_id for item in items if id(item) not in missing])
    if rt.backpressure is not None:
        per_queue: dict[str, int] = {}
        for item in items:
            queue = rt.dispatcher.queue_for(item)
            per_queue[queue] = per_queue.get(queue, 0) + 1
        for queue, n in per_queue.items():
            rt.backpressure.sent(queue, n)
    return failed


def _after_commit(rt: WorkerRuntime, run_id: str, step: str, number: int, effects: Effects) -> None:
    """Publish what the finish transaction queued; wake the scheduler only when it has work."""
    failed = _publish(rt, effects.to_send)
    if effects.wake or failed:
        _notify(rt, run_id, step, number, timer=effects.next_timer)
    if effects.callbacks:  # after the next steps went out: a callback never delays them
        from .callbacks import publish

        publish(rt.dispatcher, effects.callbacks)


def _notify(rt: WorkerRuntime, run_id: str, step: str, number: int, timer: Any = None) -> None:
    try:
        rt.events.publish({"type": "attempt_done", "run_id": run_id, "step": step,
                           "attempt": number, "timer": timer.isoformat() if timer else None})
    except Exception as exc:  # the scheduler's sweep will find the outcome in SQL
        log.warning("run %s step %s: could not publish completion event: %s", run_id, step, exc)


# -- Celery wiring ---------------------------------------------------------------------
_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def set_runtime(rt: WorkerRuntime | None) -> None:
    global _runtime
    _runtime = rt


def runtime_for(app: Any) -> WorkerRuntime:
    """The process's runtime, built from FLOWKIT_* settings on first use."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from .dispatch.celery import CeleryDispatcher
                from .dispatch.events import BrokerEvents

                settings = getattr(app, "flowkit_settings", None) or Settings.from_env()
                dispatcher = CeleryDispatcher(app, settings)
                _runtime = WorkerRuntime(
                    settings=settings, store=SqlStore(settings.database_url),
                    events=BrokerEvents(app, settings.events_queue), dispatcher=dispatcher,
                    backpressure=Backpressure(dispatcher.queue_depth, high=settings.queue_high_watermark,
                                              low=settings.queue_low_watermark, ttl_seconds=0.25))
    return _runtime


def on_hard_timeout(rt: WorkerRuntime, run_id: str, step: str, number: int, limit: float) -> None:
    """Record an attempt the pool killed at its hard time limit (Celery acks that message)."""
    reason = (f"killed at the hard time limit ({limit:g} s): the step ignored its timeout=; "
              "let the StepTimedOut raised in it propagate, or raise the timeout")
    effects = rt.store.fail_running_attempt(run_id, step, number, reason=reason,
                                            actor=f"{socket.gethostname()}:{os.getpid()}",
                                            global_cap=rt.global_cap())
    if effects is not None:
        log.error("run %s step %s: attempt %s %s", run_id, step, number, reason)
        _after_commit(rt, run_id, step, number, effects)


#: What a worker did about a cancelled attempt it runs (answered to the cancel's broadcast).
SHELL_STOPPED = "shell_stopped"
TERMINATED = "terminated"
NOT_INTERRUPTIBLE = "not_interruptible"


def stop_cancelled(task_ids: list[str], requests: Any, pool: Any) -> dict[str, str]:
    """Stop the cancelled attempts among this worker's active ``requests``; returns, per task
    id, what was done: a shell step's process group is flowkit's own and is stopped on every
    pool; a Python step is terminated only on prefork (its pool process gets SIGTERM). On the
    threads and solo pools a Python step cannot be interrupted (``NOT_INTERRUPTIBLE:<pool>``):
    it runs to its end and the store discards its outcome."""
    wanted = set(task_ids)
    pool_name = _pool_name(pool)
    outcomes: dict[str, str] = {}
    for request in list(requests):
        if request.id not in wanted or len(request.args or ()) != 3:
            continue
        run_id, step, number = request.args
        if shell.stop_for((run_id, step, int(number))):
            outcomes[request.id] = SHELL_STOPPED
        elif pool_name == "prefork":
            request.terminate(pool, signal="SIGTERM")
            outcomes[request.id] = TERMINATED
        else:  # Celery's terminate raises NotImplementedError on these pools
            outcomes[request.id] = f"{NOT_INTERRUPTIBLE}:{pool_name}"
        log.warning("run %s step %s: attempt %s cancelled by an operator: %s", run_id, step, number,
                    outcomes[request.id])
    # A shell step whose command the heartbeat stopped may have ended before this message.
    for owner in shell.stopped_lately():
        if isinstance(owner, tuple) and len(owner) == 3 and task_id_for(*owner) in wanted:
            outcomes.setdefault(task_id_for(*owner), SHELL_STOPPED)
    return outcomes


def _pool_name(pool: Any) -> str:
    name = type(pool).__module__.rsplit(".", 1)[-1]
    return {"thread": "threads", "asynpool": "prefork"}.get(name, name)


def _register_stop_command() -> None:
    from celery.worker import state as worker_state
    from celery.worker.control import Panel, control_command

    from .celery_app import STOP_COMMAND

    if STOP_COMMAND in Panel.data:  # a process-wide registry: once per process
        return

    def flowkit_stop(state: Any, task_ids: list[str], **_: Any) -> dict[str, str]:
        return stop_cancelled(task_ids, worker_state.active_requests, state.consumer.pool)

    control_command(name=STOP_COMMAND, args=[("task_ids", list)],
                    signature="[task_id, ...]")(flowkit_stop)


def register(app: Any) -> None:
    from celery import Task
    from celery.exceptions import TimeLimitExceeded

    from .celery_app import EXECUTE_TASK

    _register_stop_command()

    class ExecuteTask(Task):  # type: ignore[misc]
        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            # Runs in the worker's main process when the pool killed the child at the hard
            # limit; other failures never reach here (run_attempt records them itself).
            if isinstance(exc, TimeLimitExceeded) and len(args) == 3:
                try:
                    limit = float(exc.args[0]) if exc.args else 0.0
                    on_hard_timeout(runtime_for(self.app), args[0], args[1], int(args[2]), limit)
                except Exception:
                    log.exception("run %s step %s: could not record the hard timeout", args[0], args[1])

    @app.task(name=EXECUTE_TASK, bind=True, acks_late=True, base=ExecuteTask,  # type: ignore[untyped-decorator]
              reject_on_worker_lost=True, ignore_result=True)
    def execute(self: Any, run_id: str, step: str, attempt: int) -> str:
        from celery.exceptions import Reject
        from sqlalchemy.exc import DBAPIError

        from .errors import StoreUnavailable

        try:
            return run_attempt(runtime_for(self.app), run_id, step, int(attempt))
        except (StoreUnavailable, DBAPIError) as exc:
            # The store stayed away past FLOWKIT_STORE_RETRY_SECONDS while claiming: hand the
            # message back to the broker instead of dropping it.
            raise Reject(f"the store is unavailable: {exc}", requeue=True) from exc
