"""Runs one step attempt on a worker and reports to the store. Not public API.

Workers never decide what runs next: they claim an attempt (:func:`run_attempt`), run the
user's function with a context (:func:`execute`), record the outcome and publish what it
made ready (:func:`record`), and tell the scheduler through an event.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import refs, secrets
from ..context import StepContext
from ..dispatch.callbacks import publish as publish_callbacks
from ..errors import Retry, Skip
from ..observe import capture
from ..observe.fields import note_flow
from ..schedules.interval import run_interval
from ..sensors.pokes import NotYet
from ..sensors.worker import not_yet_outcome, poke_once
from ..spec import FlowSpec, split_instance
from ..states import AttemptState
from ..store.machine import Effects
from ..store.output_ops import save_running_output
from ..store.sql import Claim
from . import shell, success, timeouts
from .encoding import describe_exception, encode_result, format_traceback, masked, storable
from .runtime import WorkerRuntime, until_stored

log = logging.getLogger(__name__)


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


@dataclass
class Outcome:
    """What an attempt's body came to, before it is recorded."""

    state: AttemptState = AttemptState.SUCCESS
    result_json: str | None = None
    error: str | None = None
    trace: str | None = None
    retry_delay: float | None = None
    datasets: list[tuple[str, str]] = field(default_factory=list)
    #: A branch step's choice of downstream steps.
    chosen: list[str] | None = None
    spec: FlowSpec | None = None
    #: A shell step's output, kept for the record.
    tail: shell.OutputTail | None = None
    deadline: timeouts.Deadline | None = None


def run_attempt(rt: WorkerRuntime, run_id: str, step: str, number: int) -> str:
    """Claim and run one attempt; returns what happened (for logs and tests)."""
    rt.refresh_identity()
    claim = _claim(rt, run_id, step, number)
    note_flow(claim.flow)
    if claim.outcome in ("done", "duplicate", "unknown"):
        log.info("run %s step %s: attempt %s not run here (%s: %s)", run_id, step, number, claim.outcome, claim.detail)
        return claim.outcome
    if claim.outcome == "poison":
        log.error("run %s step %s: attempt %s %s", run_id, step, number, claim.detail)
        if claim.effects is not None:  # publishes its callbacks and wakes the scheduler
            _after_commit(rt, run_id, step, number, claim.effects)
        else:
            _notify(rt, run_id, step, number)
        return "poison"
    with rt._lock:
        rt._running.add((run_id, step, number))
    return record(rt, execute(rt, claim, run_id, step, number), run_id, step, number)


def execute(rt: WorkerRuntime, claim: Claim, run_id: str, step: str, number: int) -> Outcome:
    """Run the claimed attempt's body and say what it came to: a success with its encoded
    result, a skip, a retry asked for, or a failure (a timeout included). A worker being
    stopped is not the step's failure: the attempt is put back and the exit raised."""
    out = Outcome()
    try:
        _run_body(rt, claim, run_id, step, number, out)
    except Skip as exc:
        out.state, out.error = AttemptState.SKIPPED, exc.reason
    except NotYet as exc:  # a sensor's poke said "not yet": not a failure (store.sensor_ops)
        out.state, out.error = not_yet_outcome(out.spec, step, exc)
    except Retry as exc:
        out.state, out.error, out.retry_delay = AttemptState.FAILED, f"retry requested: {exc.reason}", exc.delay
    except Exception as exc:
        out.state, out.trace = AttemptState.FAILED, format_traceback()
        if (
            (out.deadline is not None and out.deadline.fired)
            or isinstance(exc, timeouts.StepTimedOut)
            or type(exc).__name__ == "SoftTimeLimitExceeded"
        ):
            timeout = rt.spec(claim.flow, claim.version).step(step).timeout_seconds or 0
            out.error = timeouts.timeout_message(timeout)
        elif isinstance(exc, (shell.ShellFailed, success.NotSuccessful)):
            out.error, out.trace = str(exc), None  # says all there is; our own frames would be noise
        else:
            out.error = describe_exception(exc)
    except (SystemExit, KeyboardInterrupt) as exc:
        if _is_interruption(exc):
            # The worker is being stopped (SIGTERM to the pool, a warm shutdown): not the
            # step's failure. Put the attempt back; it runs again.
            with rt._lock:
                rt._running.discard((run_id, step, number))
            _record_interruption(rt, run_id, step, number, exc)
            raise
        out.state, out.error = AttemptState.FAILED, f"the step called sys.exit({exc.code!r})"  # type: ignore[union-attr]
    return out


def _run_body(rt: WorkerRuntime, claim: Claim, run_id: str, step: str, number: int, out: Outcome) -> None:
    """The step function or shell command under its timeout, then its branch and success
    checks; fills ``out`` as it goes (what a failure leaves half-done is recorded too)."""
    s = rt.settings
    out.spec = spec = rt.spec(claim.flow, claim.version)
    step_spec = spec.step(step)
    secrets.register_secret_params(spec, claim.params)  # masked in this process's logs
    upstream = claim.upstream or {}
    if step_spec.compensates:  # a compensation gets the result of the step it undoes
        upstream = rt.store.results(run_id, [step_spec.compensates])
    defined, index = split_instance(step)  # an instance of a map step runs its map step's fn
    ctx = StepContext(
        flow=claim.flow,
        run_id=run_id,
        step=step,
        attempt=number,
        compensates=step_spec.compensates,
        params=claim.params or {},
        upstream=refs.revive(upstream),
        version=claim.version,
        idempotency_key=f"{run_id}:{step}",
        log=logging.getLogger(f"flowkit.step.{claim.flow}.{defined}"),
        item=claim.item,
        index=index,
        interval_source=lambda: run_interval(spec, rt.store.get_run(run_id)),
    )
    log.debug(
        "run %s step %s: attempt %s started (delivery %s)", run_id, step, number, claim.deliveries
    )  # the audit trail has it; INFO costs ~0.1 ms a step
    out.deadline = deadline = timeouts.Deadline(
        step_spec.timeout_seconds,
        name=f"run {run_id} step {step} attempt {number}",
        on_abandon=lambda: _abandon(rt, run_id, step, number, spec),
    )
    with deadline, _captured(rt, run_id, step, number, out, is_shell=step_spec.shell is not None) as tail:
        value: Any
        if step_spec.shell is not None:
            value = shell.run(step_spec.shell, tail, owner=(run_id, step, number))
        elif step_spec.kind == "sensor":
            fn = rt.callable_for(claim.flow, claim.version, defined)
            value = poke_once(step_spec, lambda: _call(fn, ctx), rt.store, run_id)
        else:
            value = _call(rt.callable_for(claim.flow, claim.version, defined), ctx)
        if step_spec.kind == "branch":
            value = out.chosen = _check_branch(spec, step, value)
        if step_spec.success_when is not None:
            check = rt.success_check_for(claim.flow, claim.version, defined)
            if check is not None:
                success.check(check, value, step=step)
    if deadline.fired:  # the step caught StepTimedOut and returned: still a timeout
        raise timeouts.StepTimedOut()
    out.result_json = encode_result(value, run_id=run_id, step=step, cap=s.max_result_bytes, max_depth=s.max_json_depth)
    out.datasets = [(u, "read") for u in step_spec.reads] + [(u, "write") for u in step_spec.writes]


@contextmanager
def _captured(
    rt: WorkerRuntime, run_id: str, step: str, number: int, out: Outcome, *, is_shell: bool
) -> Iterator[shell.OutputTail]:
    """Capture the attempt's own output (prints, ctx.log, a shell command's lines), written
    to the store while it runs; the outcome keeps it when there is any (a shell step's
    always, as before), so a step that prints nothing still finishes on the fast path."""

    def save(text: str) -> None:
        save_running_output(rt.store, run_id, step, number, worker=rt.name, output=storable(masked(text)) or "")

    with capture.capturing((run_id, step, number), rt.settings.log_cap_bytes, save) as tail:
        try:
            yield tail
        finally:
            tail.close()
            out.tail = tail if is_shell or tail.kept_anything() else None


def record(rt: WorkerRuntime, out: Outcome, run_id: str, step: str, number: int) -> str:
    """Store the outcome (retrying while the database is away), masked; then publish what it
    made ready. Returns the attempt's state, or why the outcome was discarded."""
    error, trace = storable(masked(out.error)), storable(masked(out.trace))
    output = storable(masked(out.tail.text())) if out.tail is not None else None
    try:
        effects = until_stored(
            f"run {run_id} step {step}: recording attempt {number} ({out.state.value})",
            lambda: rt.store.finish_attempt(
                run_id,
                step,
                number,
                worker=rt.name,
                state=out.state,
                result_json=out.result_json,
                error=error,
                traceback=trace,
                retry_delay=out.retry_delay,
                datasets=out.datasets,
                spec=out.spec,
                chosen=out.chosen,
                gate=rt.fast_follow_gate(),
                global_cap=rt.global_cap(),
                output=output,
                publish=lambda items: _publish(rt, items),
            ),
        )
    finally:
        with rt._lock:
            rt._running.discard((run_id, step, number))
    if effects is None:
        return _discarded(rt, out, run_id, step, number)
    # A success is DEBUG: Celery's own line names the task (<flow>.<step>) and the audit
    # trail has it; at INFO it cost about 20 us a step. Failures and skips stay at INFO.
    log.log(
        logging.DEBUG if out.state == AttemptState.SUCCESS else logging.INFO,
        "run %s step %s: attempt %s %s%s",
        run_id,
        step,
        number,
        out.state.value,
        f" ({error})" if error else "",
    )
    _after_commit(rt, run_id, step, number, effects)
    return out.state.value


def _discarded(rt: WorkerRuntime, out: Outcome, run_id: str, step: str, number: int) -> str:
    """The store no longer had the attempt as this worker's: say why its outcome is dropped."""
    if out.deadline is not None and out.deadline.abandoned:
        log.warning(
            "run %s step %s: attempt %s ended after it was recorded as timed out; outcome (%s) discarded",
            run_id,
            step,
            number,
            out.state.value,
        )
        return "lost_claim"
    row = _attempt_row(rt, run_id, step, number)
    if row is not None and row["state"] == AttemptState.CANCELLED.value:
        log.warning(
            "run %s step %s: attempt %s ended (%s) after an operator cancelled it; outcome discarded",
            run_id,
            step,
            number,
            out.state.value,
        )
        return "cancelled"
    log.warning(
        "run %s step %s: attempt %s %s; outcome (%s) discarded", run_id, step, number, _who_has(row), out.state.value
    )
    return "lost_claim"


def _abandon(rt: WorkerRuntime, run_id: str, step: str, number: int, spec: FlowSpec | None) -> None:
    """A step that timed out and did not stop: record its attempt as failed now (from the
    timeout watchdog); its later outcome loses the compare-and-set and is discarded."""
    timeout = spec.step(step).timeout_seconds or 0 if spec is not None else 0
    effects = rt.store.finish_attempt(
        run_id,
        step,
        number,
        worker=rt.name,
        state=AttemptState.FAILED,
        error=timeouts.timeout_message(timeout) + " (it did not stop; its outcome will be discarded)",
        spec=spec,
        gate=rt.fast_follow_gate(),
        global_cap=rt.global_cap(),
    )
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


def _record_interruption(rt: WorkerRuntime, run_id: str, step: str, number: int, exc: BaseException) -> None:
    reason = (
        f"interrupted on {rt.name} ({type(exc).__name__}{f' {exc.code}' if isinstance(exc, SystemExit) else ''}: "
        "the worker was stopped); not a failure of the step, it runs again"
    )
    try:
        if rt.store.interrupt_attempt(run_id, step, number, worker=rt.name, reason=reason):
            log.warning("run %s step %s: attempt %s %s", run_id, step, number, reason)
        elif _attempt_state(rt, run_id, step, number) == AttemptState.CANCELLED.value:
            log.warning(
                "run %s step %s: attempt %s stopped after an operator cancelled it; not run again", run_id, step, number
            )
    except Exception as store_exc:  # the scheduler sees the silent attempt and sends it again
        log.warning("run %s step %s: attempt %s interrupted; could not record it (%s)", run_id, step, number, store_exc)


def _claim(rt: WorkerRuntime, run_id: str, step: str, number: int) -> Claim:
    """Claim the attempt (retrying while the store is away).

    A delivery of an attempt that another worker holds with a fresh heartbeat is a
    duplicate (a re-publish, a late redelivery) and is acknowledged at once: if that worker
    dies, the scheduler publishes the attempt again when its heartbeat goes stale, and the
    next delivery takes it over.
    """
    s = rt.settings
    return until_stored(
        f"run {run_id} step {step}: claiming attempt {number}",
        lambda: rt.store.claim_attempt(
            run_id,
            step,
            number,
            worker=rt.name,
            specs=rt._specs,
            lost_after=s.lost_after_seconds,
            max_deliveries=s.max_deliveries,
        ),
        give_up_after=s.store_retry_seconds,
    )


def _check_branch(spec: FlowSpec, step: str, value: Any) -> list[str]:
    options = spec.downstream_of(step)
    chosen = [value] if isinstance(value, str) else list(value or [])
    wrong = [c for c in chosen if c not in options]
    if wrong or not all(isinstance(c, str) for c in chosen):
        raise ValueError(
            f"branch step {step} returned {value!r}; it must return the name (or a list of "
            f"names) of its downstream steps: {', '.join(options) or 'none'}"
        )
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
        publish_callbacks(rt.dispatcher, effects.callbacks)


def _notify(rt: WorkerRuntime, run_id: str, step: str, number: int, timer: Any = None) -> None:
    try:
        rt.events.publish(
            {
                "type": "attempt_done",
                "run_id": run_id,
                "step": step,
                "attempt": number,
                "timer": timer.isoformat() if timer else None,
            }
        )
    except Exception as exc:  # the scheduler's sweep will find the outcome in SQL
        log.warning("run %s step %s: could not publish completion event: %s", run_id, step, exc)


# -- Celery wiring ---------------------------------------------------------------------


def on_hard_timeout(rt: WorkerRuntime, run_id: str, step: str, number: int, limit: float) -> None:
    """Record an attempt the pool killed at its hard time limit (Celery acks that message)."""
    reason = (
        f"killed at the hard time limit ({limit:g} s): the step ignored its timeout=; "
        "let the StepTimedOut raised in it propagate, or raise the timeout"
    )
    effects = rt.store.fail_running_attempt(
        run_id, step, number, reason=reason, actor=f"{socket.gethostname()}:{os.getpid()}", global_cap=rt.global_cap()
    )
    if effects is not None:
        log.error("run %s step %s: attempt %s %s", run_id, step, number, reason)
        _after_commit(rt, run_id, step, number, effects)
