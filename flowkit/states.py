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

    @property
    def terminal(self) -> bool:
        return self in (AttemptState.SUCCESS, AttemptState.FAILED, AttemptState.SKIPPED)


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
        {StepState.QUEUED, StepState.SKIPPED, StepState.UPSTREAM_FAILED, StepState.CANCELLED,
         StepState.SCHEDULED, StepState.AWAITING_APPROVAL,
         StepState.RUNNING,  # a map step expanded: it runs while its instances do
         StepState.FAILED}  # a map step whose upstream gave no list
    ),
    # scheduled: ready, waiting for a slot of the ledger (or for backpressure to release)
    StepState.SCHEDULED: frozenset({StepState.QUEUED, StepState.CANCELLED, StepState.FAILED}),
    StepState.AWAITING_APPROVAL: frozenset({StepState.QUEUED, StepState.SKIPPED, StepState.CANCELLED}),
    StepState.QUEUED: frozenset({StepState.RUNNING, StepState.CANCELLED, StepState.FAILED}),
    StepState.RUNNING: frozenset(
        {StepState.SUCCESS, StepState.FAILED, StepState.SKIPPED, StepState.UP_FOR_RETRY,
         StepState.CANCELLED,
         StepState.QUEUED}  # interrupted (worker stopped, broker lost): the attempt runs again
    ),
    StepState.UP_FOR_RETRY: frozenset({StepState.QUEUED, StepState.SCHEDULED, StepState.CANCELLED}),
}

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset(
        {RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED}
    ),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
}


def can_transition(old: StepState | RunState, new: StepState | RunState) -> bool:
    """Whether the tables above allow ``old -> new`` (every compare-and-set checks this)."""
    table: dict[Any, frozenset[Any]] = (
        STEP_TRANSITIONS if isinstance(old, StepState) else RUN_TRANSITIONS
    )
    return new in table.get(old, frozenset())
