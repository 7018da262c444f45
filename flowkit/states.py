"""Run and step states, and the transitions each may take."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


class StepState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    UP_FOR_RETRY = "up_for_retry"
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def terminal(self) -> bool:
        return self in STEP_TERMINAL


class AttemptState(StrEnum):
    QUEUED = "queued"  # published to the broker, not started
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"  # the step raised Skip
    CANCELLED = "cancelled"  # its run was cancelled; a late outcome is discarded
    NOT_YET = "not_yet"  # a sensor's poke: its condition is not met yet (not a failure)

    @property
    def terminal(self) -> bool:
        return self in (
            AttemptState.SUCCESS,
            AttemptState.FAILED,
            AttemptState.SKIPPED,
            AttemptState.CANCELLED,
            AttemptState.NOT_YET,
        )


#: Where a worker's finish may find the attempt it ran, in this order: running on that worker
#: (its claim is recorded), or queued with no worker recorded: its claim, committed without
#: waiting for the disk (store.sql's claim_engine), was lost in a database crash while the body
#: ran, and the finish records the claim (queued -> running) with the outcome. In any other
#: state another actor has the attempt (a takeover, a cancel, a timeout): the outcome is
#: discarded. PostgreSQL's one-statement finish takes the first case only and leaves the rest
#: to the generic path (store.worker_ops), which holds this rule.
FINISHABLE_ATTEMPT = (AttemptState.RUNNING, AttemptState.QUEUED)

RUN_TERMINAL = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED})
STEP_TERMINAL = frozenset(
    {
        StepState.SUCCESS,
        StepState.FAILED,
        StepState.SKIPPED,
        StepState.UPSTREAM_FAILED,
        StepState.CANCELLED,
    }
)
#: Terminal step states that fail downstream steps (under all_success and none_failed).
STEP_BAD = frozenset({StepState.FAILED, StepState.UPSTREAM_FAILED, StepState.CANCELLED})

#: Allowed step transitions; every write checks the old state (compare-and-set).
STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset(
        {
            StepState.QUEUED,
            StepState.SKIPPED,
            StepState.UPSTREAM_FAILED,
            StepState.CANCELLED,
            StepState.SCHEDULED,
            StepState.AWAITING_APPROVAL,
            StepState.RUNNING,  # a map step expanded: it runs while its instances do
            StepState.FAILED,
        }  # a map step whose upstream gave no list
    ),
    # scheduled: ready, waiting for a slot of the ledger (or for backpressure to release)
    StepState.SCHEDULED: frozenset({StepState.QUEUED, StepState.CANCELLED, StepState.FAILED}),
    # awaiting_approval: `flowkit approve` -> success, `flowkit reject` -> failed
    StepState.AWAITING_APPROVAL: frozenset(
        {StepState.QUEUED, StepState.SKIPPED, StepState.CANCELLED, StepState.SUCCESS, StepState.FAILED}
    ),
    StepState.QUEUED: frozenset({StepState.RUNNING, StepState.CANCELLED, StepState.FAILED}),
    StepState.RUNNING: frozenset(
        {
            StepState.SUCCESS,
            StepState.FAILED,
            StepState.SKIPPED,
            StepState.UP_FOR_RETRY,
            StepState.CANCELLED,
            StepState.QUEUED,
        }  # interrupted (worker stopped, broker lost): the attempt runs again
    ),
    StepState.UP_FOR_RETRY: frozenset({StepState.QUEUED, StepState.SCHEDULED, StepState.CANCELLED}),
}

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
}


#: Moves only an operator makes (``flowkit runs retry`` and ``runs mark``), on top of the
#: tables above; the engine's own compare-and-sets never take them. A step that is queued or
#: running is never marked or retried (its attempt must end, or the run be cancelled).
_S = StepState
OPERATOR_STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    # mark: a step with no live attempt takes the state the operator gives it
    _S.PENDING: frozenset({_S.SUCCESS, _S.SKIPPED}),
    _S.SCHEDULED: frozenset({_S.SUCCESS, _S.SKIPPED}),
    _S.UP_FOR_RETRY: frozenset({_S.SUCCESS, _S.SKIPPED}),
    _S.AWAITING_APPROVAL: frozenset({_S.SUCCESS, _S.SKIPPED}),
    # retry (-> pending; attempt numbers continue) or mark
    _S.FAILED: frozenset({_S.PENDING, _S.SUCCESS, _S.SKIPPED}),
    _S.UPSTREAM_FAILED: frozenset({_S.PENDING, _S.SUCCESS, _S.SKIPPED}),
    _S.CANCELLED: frozenset({_S.PENDING}),
    _S.SUCCESS: frozenset({_S.PENDING, _S.SKIPPED}),
    _S.SKIPPED: frozenset({_S.PENDING, _S.SUCCESS}),
}

OPERATOR_RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    # retry or mark reopens a finished run; the machine decides its end again
    RunState.FAILED: frozenset({RunState.RUNNING}),
    RunState.CANCELLED: frozenset({RunState.RUNNING}),
    RunState.SUCCESS: frozenset({RunState.RUNNING}),
}


def can_transition(old: StepState | RunState, new: StepState | RunState, *, operator: bool = False) -> bool:
    """Whether the tables above allow ``old -> new`` (every compare-and-set checks this);
    ``operator`` adds the moves only an operator's action may make."""
    table: dict[Any, frozenset[Any]] = STEP_TRANSITIONS if isinstance(old, StepState) else RUN_TRANSITIONS
    if new in table.get(old, frozenset()):
        return True
    if not operator:
        return False
    extra: dict[Any, frozenset[Any]] = (
        OPERATOR_STEP_TRANSITIONS if isinstance(old, StepState) else OPERATOR_RUN_TRANSITIONS
    )
    return new in extra.get(old, frozenset())
